//! Sessions a later build of the same project resumes (a build's `session_id`): the check
//! that a requested session belongs to the project before anything is queued, where this
//! node keeps a project's sessions between builds (`<data_dir>/sessions/<project>/<provider>`,
//! handed to the agent as `AgentRequest::session_dir`; never mounted into a sandbox), and
//! their removal with the project or once older than the history kept. Which sessions a
//! project has is the store's (`project_sessions`, written when a build completes); what a
//! session file holds is the adapter's.

use std::{
    path::{Path, PathBuf},
    time::SystemTime,
};

use rdev_core::{check_resumable, BuildSpec, Project, ProjectName, SessionError, StoreError};

use crate::services::Services;

/// Where session files live under the data directory.
const SESSIONS: &str = "sessions";

/// A build's `session_id` that may not be resumed, or the store could not say.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where this node keeps `project`'s sessions of `provider` between builds.
pub fn session_dir(data_dir: &Path, project: &ProjectName, provider: &str) -> PathBuf {
    data_dir
        .join(SESSIONS)
        .join(project.as_str())
        .join(provider)
}

/// Checks that the session `spec` resumes, if any, was reported by a completed build of
/// `project` and made by the provider this build would run (the request's, else the
/// project's, else the node's default).
pub async fn check_resumable_spec(
    services: &Services,
    project: &Project,
    spec: &BuildSpec,
) -> Result<(), ResumeError> {
    let Some(session_id) = &spec.session_id else {
        return Ok(());
    };
    let found = services
        .store
        .project_session(&project.name, session_id)
        .await?;
    let provider = match spec.provider.as_ref().or(project.provider.as_ref()) {
        Some(p) => Some(p.to_string()),
        None => services.registry.list().first().map(ToString::to_string),
    };
    check_resumable(
        found.as_ref(),
        &project.name,
        session_id,
        provider.as_deref(),
    )?;
    Ok(())
}

/// Removes every session this node keeps for the deleted `project`.
pub async fn forget(data_dir: &Path, project: &ProjectName) {
    let dir = data_dir.join(SESSIONS).join(project.as_str());
    match tokio::fs::remove_dir_all(&dir).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove the project's sessions")
        }
    }
}

/// Removes session files last written before `cutoff` (their builds are history that
/// retention prunes, so the store no longer lets a build resume them), and directories
/// left empty; returns how many files went.
pub fn prune_files(data_dir: &Path, cutoff: SystemTime) -> usize {
    let mut removed = 0;
    let root = data_dir.join(SESSIONS);
    for project in read_dirs(&root) {
        for provider in read_dirs(&project) {
            let Ok(entries) = std::fs::read_dir(&provider) else {
                continue;
            };
            for entry in entries.flatten() {
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t < cutoff);
                if old && entry.file_type().is_ok_and(|t| t.is_file()) {
                    removed += usize::from(std::fs::remove_file(entry.path()).is_ok());
                }
            }
            let _ = std::fs::remove_dir(&provider);
        }
        let _ = std::fs::remove_dir(&project);
    }
    removed
}

/// The directories (not symlinks) directly in `dir`.
fn read_dirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn old_session_files_go_and_empty_dirs_with_them() {
        let data = tempfile::tempdir().unwrap();
        let name = ProjectName::parse("site").unwrap();
        let (claude, opencode) = (
            session_dir(data.path(), &name, "claude-code"),
            session_dir(data.path(), &name, "opencode"),
        );
        for dir in [&claude, &opencode] {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(claude.join("s-1.jsonl"), "old").unwrap();
        std::fs::write(opencode.join("ses_b.json"), "new").unwrap();
        let past = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(claude.join("s-1.jsonl"))
            .unwrap()
            .set_modified(past - Duration::from_secs(60))
            .unwrap();
        assert_eq!(prune_files(data.path(), past), 1);
        assert!(!claude.exists(), "emptied and removed");
        assert!(opencode.join("ses_b.json").is_file());
        assert_eq!(prune_files(&data.path().join("none"), past), 0);
    }
}
