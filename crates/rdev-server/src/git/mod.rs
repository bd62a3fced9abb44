//! Git for builds: one warm bare mirror per project, a cheap per-task checkout sharing the
//! mirror's objects (made ahead of time as a spare), committing with the `Rdev-Task`
//! trailer, finding a task's commit on the remote, and pushing. It runs the `git` binary and
//! knows nothing about tasks beyond their id.
//!
//! The agent writes a checkout's worktree and nothing else of it: each checkout keeps its
//! git directory beside the worktree (`work/<name>/git` next to `work/<name>/tree`), the
//! worktree's `.git` is only a `gitdir:` file for the agent's own `git status`, and every
//! git command rdev runs names the git dir and worktree explicitly, in a cleared
//! environment, with hooks, fsmonitor, submodule recursion and signing off ([`command`]).
//! Credentials reach git only as `GIT_CONFIG_COUNT` entries of a [`GitEnv`], never argv or a
//! config file.
//!
//! - [`command`]: running git hardened (the only place that spawns it).
//! - [`workspaces`]: mirrors, the checkout layout, creating and removing checkouts.
//! - [`provision`]: creating a project's new bare repository.
//! - [`cleanup`]: how checkouts end: removed with the agent's state, kept after a failure,
//!   listed for the housekeeping sweep.
//! - [`spares`]: checkouts made ahead of time, keyed by commit.
//! - [`workspace`]: one task's checkout: status, commit, push.
//! - [`rebase`]: a task's commit replayed onto a branch that moved, in the object store.
//! - [`changes`]: what a push would send, read from the object store for push protection.

mod changes;
mod cleanup;
mod command;
mod provision;
mod rebase;
mod spares;
mod workspace;
mod workspaces;

#[cfg(test)]
pub(crate) mod fixtures;

use std::time::Duration;

pub use changes::{ChangeLimits, ChangedFile, Unpushed};
pub use cleanup::CheckoutEntry;
pub(crate) use command::is_local_remote;
pub use command::DEFAULT_GIT_TIMEOUT;
use rdev_core::ErrorCode;
pub use rebase::Rebase;
pub use workspace::Workspace;
pub use workspaces::{GitWorkspaces, DEFAULT_SPARE_CHECKOUTS};

/// The commit trailer that ties a commit to the task that made it.
pub const TASK_TRAILER: &str = "Rdev-Task";

/// A git command failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The `git` binary could not be started (or its pipes failed).
    #[error("could not run git: {0}")]
    Spawn(String),
    /// A filesystem operation around git failed (making a checkout's directories, moving a
    /// spare into place, writing a `.git` file, git's scratch `HOME`).
    #[error("cannot {op} {}: {source}", .path.display())]
    Io {
        /// What was being done (`"create"`, `"rename"`, ...).
        op: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`git {args}` failed ({status}): {stderr}")]
    Failed {
        args: String,
        status: String,
        stderr: String,
    },
    #[error("git output was not understood: {0}")]
    Parse(String),
    #[error("git timed out after {0:?}: {1}")]
    Timeout(Duration, String),
    /// A new repository was asked for where something already exists (a repository rdev
    /// did not create, or one left behind by an earlier project of that name).
    #[error("{} already exists; rdev creates a repository only where there is none (remove it, or give it as repo_url)", .0.display())]
    RepositoryExists(std::path::PathBuf),
    /// A push refused because the remote branch has commits the pushed one lacks (someone
    /// pushed meanwhile); told apart by fetching the branch, not by git's wording.
    #[error("the remote branch {branch} has commits the push lacks (not a fast-forward)")]
    NotFastForward { branch: String },
}

impl ErrorCode for GitError {
    fn code(&self) -> &'static str {
        match self {
            Self::Spawn(_) => "git_unavailable",
            Self::Io { .. } => "git_io_error",
            Self::Failed { .. } => "git_failed",
            Self::Parse(_) => "git_parse_error",
            Self::Timeout(..) => "git_timeout",
            Self::RepositoryExists(_) => "repository_exists",
            Self::NotFastForward { .. } => "git_not_fast_forward",
        }
    }
}

impl GitError {
    /// For `map_err`: the filesystem operation `op` on `path` failed.
    fn io<'a>(
        op: &'static str,
        path: &'a std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> Self + 'a {
        move |source| Self::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Author identity for rdev's commits.
#[derive(Debug, Clone)]
pub struct Author {
    pub name: String,
    pub email: String,
}

impl Default for Author {
    fn default() -> Self {
        Self {
            name: "rdev".to_owned(),
            email: "rdev@localhost".to_owned(),
        }
    }
}

/// The credential entries handed to every git invocation (`GIT_CONFIG_COUNT`,
/// `GIT_CONFIG_KEY_<n>`, `GIT_CONFIG_VALUE_<n>`, e.g. the token header from the secret
/// store). Other variables are dropped, not passed. Values are never logged.
#[derive(Clone, Default)]
pub struct GitEnv(pub Vec<(String, String)>);

impl std::fmt::Debug for GitEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = self.0.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("GitEnv").field("keys", &keys).finish()
    }
}
