//! Agent sessions a later build of the same project may resume: the [`ProjectSession`] a
//! completed build leaves behind, the [`SessionStore`] port that finds it, and the rule a
//! build's `session_id` must pass before anything is queued ([`check_resumable`]). Pure
//! domain: no I/O, and nothing about where or how an agent keeps its transcripts.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{ErrorCode, ProjectName, StoreError, TaskId};

/// A conversation an agent had in a completed build of `project`, resumable by a later
/// build of the same project with `session_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectSession {
    pub project: ProjectName,
    pub session_id: String,
    /// The provider whose agent made it (`claude-code`, `opencode`).
    pub provider: String,
    /// The latest completed task that reported it.
    pub task_id: TaskId,
    /// When a completed build first reported it.
    pub created_at: DateTime<Utc>,
}

/// The sessions completed builds reported, per project. Written by the store itself when
/// a task completes (the session is part of its result), so no caller has to remember to.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// The session `session_id` of `project`; `None` when no completed build of that
    /// project reported it (another project's session included).
    async fn project_session(
        &self,
        project: &ProjectName,
        session_id: &str,
    ) -> Result<Option<ProjectSession>, StoreError>;
}

/// A build asked to resume a session it may not resume.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// No completed build of the project reported this session.
    #[error(
        "unknown session {session_id}: no completed build of project {project} reported it; \
         pass the session_id from the result of an earlier build of this project"
    )]
    Unknown {
        project: ProjectName,
        session_id: String,
    },
    /// The session was made by another provider than the one this build would run.
    #[error(
        "session {session_id} was made by {made_by}, but this build would run {provider}: a \
         session resumes only with the provider that made it"
    )]
    OtherProvider {
        session_id: String,
        made_by: String,
        provider: String,
    },
}

impl ErrorCode for SessionError {
    fn code(&self) -> &'static str {
        "unknown_session"
    }
}

/// Whether a build of `project` that would run `provider` may resume `session_id`, given
/// what the store `found` for that project. `provider` is `None` when no provider is
/// known yet (none registered); then only the project is checked.
pub fn check_resumable(
    found: Option<&ProjectSession>,
    project: &ProjectName,
    session_id: &str,
    provider: Option<&str>,
) -> Result<(), SessionError> {
    let Some(session) = found.filter(|s| s.project == *project && s.session_id == session_id)
    else {
        return Err(SessionError::Unknown {
            project: project.clone(),
            session_id: session_id.to_owned(),
        });
    };
    match provider {
        Some(p) if p != session.provider => Err(SessionError::OtherProvider {
            session_id: session_id.to_owned(),
            made_by: session.provider.clone(),
            provider: p.to_owned(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(project: &str) -> ProjectSession {
        ProjectSession {
            project: ProjectName::parse(project).unwrap(),
            session_id: "s-1".into(),
            provider: "claude-code".into(),
            task_id: TaskId::new(),
            created_at: Utc::now(),
        }
    }

    #[test]
    fn only_a_session_of_the_same_project_and_provider_resumes() {
        let acme = ProjectName::parse("acme").unwrap();
        let own = session("acme");
        assert_eq!(
            check_resumable(Some(&own), &acme, "s-1", Some("claude-code")),
            Ok(())
        );
        assert_eq!(check_resumable(Some(&own), &acme, "s-1", None), Ok(()));
        let unknown = check_resumable(None, &acme, "s-1", Some("claude-code")).unwrap_err();
        assert_eq!(unknown.code(), "unknown_session");
        assert!(unknown.to_string().contains("project acme"), "{unknown}");
        let other = session("other");
        assert!(matches!(
            check_resumable(Some(&other), &acme, "s-1", None),
            Err(SessionError::Unknown { .. })
        ));
        let provider = check_resumable(Some(&own), &acme, "s-1", Some("opencode")).unwrap_err();
        assert_eq!(provider.code(), "unknown_session");
        assert!(
            provider.to_string().contains("made by claude-code"),
            "{provider}"
        );
    }
}
