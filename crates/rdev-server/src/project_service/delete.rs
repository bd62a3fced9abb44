//! Deleting a project completely ([`delete_project`]): the store's part in one transaction,
//! then this node's running attempts, mirrors and the bare repository rdev created. It must
//! never remove a repository rdev did not create.

use std::path::{Path, PathBuf};

use rdev_core::{Project, ProjectDeletion, ProjectName, SecretName, Store, StoreError, TaskId};
use serde::Serialize;

use crate::services::Services;

/// What became of a deleted project's repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
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
/// and spare clones go, so do the agent sessions this node kept for the project (the
/// store's rows went with the project), and the bare repository rdev created is removed.
/// A failure there is logged and reported, never undone into a half-deleted project.
pub async fn delete_project(
    services: &Services,
    name: &ProjectName,
    actor: &str,
) -> Result<DeleteReport, StoreError> {
    let store = services.store.as_ref();
    let ProjectDeletion {
        project,
        cancelled,
        secrets_removed,
        callbacks_expired,
        tokens_revoked,
        tokens_narrowed,
    } = store.delete_project(name, actor).await?;
    for id in &cancelled {
        services.running.cancel(*id);
    }
    services.git.forget(name).await;
    crate::sessions::forget(&services.config.data_dir, name).await;
    let repository = remove_created_repo(store, &project, &services.config.git_root()).await;
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
            project.repo_url.as_str(),
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
                .any(|p| local_path(p.repo_url.as_str()).as_deref() == Some(path.as_path()))
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
