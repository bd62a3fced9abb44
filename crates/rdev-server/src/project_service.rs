//! Project set-up and tear-down that need git or files: giving an empty repository its
//! first commit rendered from a template, and deleting a project completely
//! ([`delete_project`]: the store's part in one transaction, then this node's running
//! attempts, mirrors and the bare repository rdev created). The worker uses
//! [`render_initial_commit`] too, for a build on a still-empty project. The HTTP layer
//! validates; this module only does the work. It must never remove a repository rdev did
//! not create.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use rdev_core::{
    ErrorCode, Project, ProjectDeletion, ProjectName, PushProtection, SecretName, Store,
    StoreError, TaskId,
};
use serde::Serialize;

use crate::{
    cancels::TaskCancels,
    git::{Author, GitEnv, GitError, GitWorkspaces, Workspace},
    scan::{scan_push, ScanLimits, Scanner, SECRET_IN_COMMIT},
    templates::{TemplateError, TemplateRegistry},
};

/// Why a repository could not be initialised.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Git(#[from] GitError),
    /// Push protection found secrets in the rendered first commit (the project blocks).
    #[error(
        "secret_in_commit: push protection found secrets in the first commit, so nothing was \
         pushed: {0}"
    )]
    SecretInCommit(String),
}

impl ErrorCode for InitError {
    fn code(&self) -> &'static str {
        match self {
            Self::Template(e) => e.code(),
            Self::Git(e) => e.code(),
            Self::SecretInCommit(_) => SECRET_IN_COMMIT,
        }
    }
}

/// Renders `template` with `vars` into the (empty) workspace and commits it; returns the
/// commit's SHA. The caller pushes.
pub async fn render_initial_commit(
    ws: &Workspace,
    templates: &Arc<TemplateRegistry>,
    template: &str,
    vars: &BTreeMap<String, String>,
    author: &Author,
    task: Option<TaskId>,
) -> Result<Option<String>, InitError> {
    let dir = ws.dir.clone();
    let templates = Arc::clone(templates);
    let (name, vars_owned) = (template.to_owned(), vars.clone());
    tokio::task::spawn_blocking(move || templates.render_into(&name, &vars_owned, &dir))
        .await
        .map_err(|e| GitError::Spawn(format!("render task failed: {e}")))??;
    let message = format!("Initialise from template {template}");
    Ok(ws.commit_all(&message, task, author).await?)
}

/// Gives `project`'s repository its first commit from `template` when its default branch
/// has no commit yet. Returns the pushed SHA, or `None` when the branch already had
/// history (nothing is rendered over existing work). The commit is scanned by `scanner`
/// before it is pushed, as a build's are: a finding stops it unless the project warns.
#[allow(clippy::too_many_arguments)]
pub async fn initialise_repository(
    git: &GitWorkspaces,
    templates: &Arc<TemplateRegistry>,
    project: &Project,
    template: &str,
    vars: &BTreeMap<String, String>,
    author: &Author,
    env: &GitEnv,
    scanner: Arc<Scanner>,
) -> Result<Option<String>, InitError> {
    let ws = git
        .prepare(
            &project.name,
            &project.repo_url,
            &project.default_branch,
            TaskId::new(),
            env,
        )
        .await?;
    let result = async {
        if !ws.is_empty {
            return Ok(None);
        }
        let sha = render_initial_commit(&ws, templates, template, vars, author, None).await?;
        if sha.is_some() {
            let report = scan_push(&ws, scanner, &ScanLimits::default()).await?;
            if !report.is_clean() {
                if project.push_protection == PushProtection::Block {
                    return Err(InitError::SecretInCommit(report.summary()));
                }
                tracing::warn!(project = %project.name, findings = %report.summary(), "push protection (warn): pushing the first commit with findings");
            }
            ws.push().await?;
        }
        Ok(sha)
    }
    .await;
    git.remove(ws);
    result
}

/// What became of a deleted project's repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RepositoryOutcome {
    /// rdev had created it; it is gone.
    Removed { path: String },
    /// rdev had created it, but it was gone already.
    Absent { path: String },
    /// Left in place, and why (given as `repo_url`, still used by another project, not
    /// where rdev creates repositories, not a repository).
    Kept { path: String, reason: String },
    /// Removing it failed; the project is deleted nonetheless and the directory is left
    /// for the operator (a project created again under the name is refused until then).
    Failed { path: String, error: String },
}

/// What deleting a project did: the answer of `DELETE /projects/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeleteReport {
    pub project: ProjectName,
    /// Queued and running tasks now cancelled.
    pub cancelled_tasks: Vec<TaskId>,
    /// The project's secrets that were deleted, the callback signing secret included.
    pub secrets_removed: Vec<SecretName>,
    /// Undelivered callbacks given up on (nothing could sign them any more).
    pub callbacks_expired: u64,
    /// API tokens limited to this project alone, revoked with it.
    pub tokens_revoked: Vec<String>,
    /// API tokens limited to several projects, which lost this one.
    pub tokens_narrowed: Vec<String>,
    pub repository: RepositoryOutcome,
}

/// Deletes `name` completely. The database part is one transaction
/// ([`rdev_core::ProjectStore::delete_project`]: tasks cancelled, keys freed, callbacks
/// expired, secrets deleted, row gone); if it fails, nothing changed. Then, outside it:
/// the cancelled attempts running on this node stop at once (other nodes' workers find
/// their lease lost at the next heartbeat, as for `POST /tasks/{id}/cancel`), the mirror
/// and spare clones go, and the bare repository rdev created is removed. A failure there
/// is logged and reported, never undone into a half-deleted project.
pub async fn delete_project(
    store: &dyn Store,
    git: &GitWorkspaces,
    cancels: &TaskCancels,
    git_root: &Path,
    name: &ProjectName,
    actor: &str,
) -> Result<DeleteReport, StoreError> {
    let ProjectDeletion {
        project,
        cancelled,
        secrets_removed,
        callbacks_expired,
        tokens_revoked,
        tokens_narrowed,
    } = store.delete_project(name, actor).await?;
    for id in &cancelled {
        cancels.cancel(*id);
    }
    git.forget(name).await;
    let repository = remove_created_repo(store, &project, git_root).await;
    tracing::info!(
        project = %name,
        cancelled = cancelled.len(),
        secrets = secrets_removed.len(),
        callbacks_expired,
        ?tokens_revoked,
        ?tokens_narrowed,
        repository = ?repository,
        "project deleted"
    );
    Ok(DeleteReport {
        project: project.name,
        cancelled_tasks: cancelled,
        secrets_removed,
        callbacks_expired,
        tokens_revoked,
        tokens_narrowed,
        repository,
    })
}

/// A local repository location as a comparable absolute path (`file://` stripped); `None`
/// for remote URLs.
fn local_path(repo: &str) -> Option<PathBuf> {
    let path = repo.strip_prefix("file://").unwrap_or(repo);
    if path.contains("://") || (!path.starts_with('/') && path.contains(':')) {
        return None;
    }
    std::path::absolute(path).ok()
}

/// Removes the repository rdev created for the deleted `project`, if every check says it
/// is rdev's alone: recorded as created, exactly `<git_root>/<name>.git`, used by no other
/// project, a real directory holding a git repository.
async fn remove_created_repo(
    store: &dyn Store,
    project: &Project,
    git_root: &Path,
) -> RepositoryOutcome {
    let kept = |path: &str, reason: &str| RepositoryOutcome::Kept {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let Some(created) = &project.created_repo else {
        return kept(
            &project.repo_url,
            "given as repo_url; rdev removes only a repository it created",
        );
    };
    let path = PathBuf::from(created);
    let expected = std::path::absolute(git_root.join(format!("{}.git", project.name))).ok();
    if expected.as_deref() != Some(path.as_path()) {
        return kept(
            created,
            "not where rdev creates repositories (git_root changed?)",
        );
    }
    match store.list_projects().await {
        Ok(others) => {
            if others
                .iter()
                .any(|p| local_path(&p.repo_url).as_deref() == Some(path.as_path()))
            {
                return kept(created, "another project uses it as its repo_url");
            }
        }
        Err(e) => {
            return RepositoryOutcome::Failed {
                path: created.clone(),
                error: format!("could not check that no other project uses it: {e}"),
            }
        }
    }
    match tokio::fs::symlink_metadata(&path).await {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return RepositoryOutcome::Absent {
                path: created.clone(),
            }
        }
        Err(e) => {
            return RepositoryOutcome::Failed {
                path: created.clone(),
                error: e.to_string(),
            }
        }
        Ok(meta) if !meta.is_dir() => return kept(created, "not a directory"),
        Ok(_) if !path.join("HEAD").is_file() => return kept(created, "not a git repository"),
        Ok(_) => {}
    }
    match tokio::fs::remove_dir_all(&path).await {
        Ok(()) => RepositoryOutcome::Removed {
            path: created.clone(),
        },
        Err(e) => {
            tracing::warn!(path = %created, error = %e, "could not remove the deleted project's repository");
            RepositoryOutcome::Failed {
                path: created.clone(),
                error: e.to_string(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn new_repository_gets_a_rendered_first_commit_once() {
        let tmp = tempfile::tempdir().unwrap();
        let name = ProjectName::parse("landing").unwrap();
        let repo = GitWorkspaces::create_bare_repo(&tmp.path().join("repos"), &name, "main")
            .await
            .unwrap();
        let project = Project {
            name,
            repo_url: repo.to_string_lossy().into_owned(),
            default_branch: "main".into(),
            template: Some("static-site".into()),
            woodpecker_repo_id: None,
            deploy_url_pattern: None,
            provider: None,
            secrets: Default::default(),
            created_repo: Some(repo.to_string_lossy().into_owned()),
            push_protection: Default::default(),
            push_protection_allow: Vec::new(),
            network_allow: Vec::new(),
            max_cost_usd: None,
            max_tokens: None,
        };
        let git = GitWorkspaces::new(tmp.path().join("git"));
        let templates = Arc::new(TemplateRegistry::builtin().unwrap());
        let info = templates.get("static-site").unwrap().info();
        let mut vars = BTreeMap::new();
        for (name, _) in info.variables.iter().filter(|(_, v)| v.required) {
            vars.insert(name.clone(), "Hello Test".to_owned());
        }
        let sha = initialise_repository(
            &git,
            &templates,
            &project,
            "static-site",
            &vars,
            &Author::default(),
            &GitEnv::default(),
            Arc::new(Scanner::new([], Vec::new())),
        )
        .await
        .unwrap()
        .expect("an empty repository gets a commit");
        let out = std::process::Command::new("git")
            .args([
                "--git-dir",
                &project.repo_url,
                "rev-parse",
                "refs/heads/main",
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), sha);
        let tree = std::process::Command::new("git")
            .args([
                "--git-dir",
                &project.repo_url,
                "ls-tree",
                "-r",
                "--name-only",
                "main",
            ])
            .output()
            .unwrap();
        let files = String::from_utf8_lossy(&tree.stdout);
        assert!(files.lines().any(|f| f == ".woodpecker.yaml"), "{files}");

        // A second call finds history and renders nothing.
        let again = initialise_repository(
            &git,
            &templates,
            &project,
            "static-site",
            &vars,
            &Author::default(),
            &GitEnv::default(),
            Arc::new(Scanner::new([], Vec::new())),
        )
        .await
        .unwrap();
        assert_eq!(again, None);
    }
}
