//! Landing a build's commit on the project's default branch when the branch moved while
//! the agent ran (another build of a project with `max_parallel_builds` above 1, or a
//! person pushing): the push refused as not fast forward
//! ([`crate::git::GitError::NotFastForward`]), the commit is replayed onto the branch's
//! new head and pushed again, up to [`MAX_REBASES`] times, without running the agent
//! again. A replay that conflicts (or a branch that keeps moving) ends the task failed with
//! `push_conflict`, not retried: the original commit goes to the task's branch
//! `rdev/<task id>`, named in the result and the callback. Every push is made only while
//! the lease is held. It must not run the agent nor write the task's end.

use rdev_core::BuildResult;
use serde_json::json;

use super::{
    build_ctx::{task_branch, Ctx},
    outcome::{failed, BuildOutcome},
};
use crate::git::{GitError, Rebase, Workspace};

/// The code that leads the error of a task whose commit could not land.
pub(super) const PUSH_CONFLICT: &str = "push_conflict";

/// How many times a build replays its commit onto a branch that keeps moving.
pub(super) const MAX_REBASES: usize = 3;

/// Where a commit ended up.
pub(super) enum Landed {
    /// On the branch: the commit pushed (the original, or its replay).
    Pushed(String),
    /// Not on the branch: the task ends with `push_conflict` ([`conflict`]).
    Conflict(String),
    /// The lease is gone: write nothing.
    Stopped,
    /// The push failed otherwise (retryable, as before there was a rebase).
    Failed(GitError),
}

/// Pushes `sha` to `branch`; a refusal as not fast forward replays `sha` (always the
/// original, so each replay is its own change onto the newest head) and pushes again.
pub(super) async fn push_or_rebase(
    cx: &Ctx<'_>,
    ws: &Workspace,
    sha: &str,
    branch: &str,
) -> Landed {
    let author = cx.deps.config.author();
    let mut commit = sha.to_owned();
    let mut rebases = 0;
    loop {
        match ws.push_commit(&commit, branch).await {
            Ok(()) => return Landed::Pushed(commit),
            Err(GitError::NotFastForward { .. }) => {}
            Err(e) => return Landed::Failed(e),
        }
        if rebases == MAX_REBASES {
            return Landed::Conflict(format!(
                "it moved again after each of {MAX_REBASES} rebases"
            ));
        }
        rebases += 1;
        match ws.rebase_onto_remote(sha, branch, &author).await {
            Ok(Rebase::Rebased { commit: new, onto }) => {
                cx.note(
                    "progress",
                    json!({"step": "rebase", "onto": onto, "commit_sha": new, "rebase": rebases}),
                )
                .await;
                commit = new;
            }
            Ok(Rebase::Conflict(why)) => return Landed::Conflict(why),
            Err(e) => return Landed::Failed(e),
        }
        if !cx.still_held().await {
            return Landed::Stopped;
        }
    }
}

/// The end of a build whose commit `sha` could not land on the default branch (`why`):
/// the commit pushed to the task's branch, and the task failed with `push_conflict`
/// carrying the branch and the commit in `done`.
pub(super) async fn conflict(
    cx: &Ctx<'_>,
    ws: &Workspace,
    sha: String,
    why: &str,
    done: BuildResult,
) -> BuildOutcome {
    let branch = task_branch(cx.task.id);
    cx.note(
        "progress",
        json!({"step": PUSH_CONFLICT, "reason": why, "commit_sha": sha, "branch": branch}),
    )
    .await;
    if !cx.still_held().await {
        return BuildOutcome::Stopped;
    }
    if let Err(e) = ws.push_commit(&sha, &branch).await {
        return failed(format!("push failed: {e}"), true);
    }
    conflict_result(cx, sha, why, done)
}

/// The `push_conflict` outcome for `sha` kept on the task's branch, named in `done`.
pub(super) fn conflict_result(
    cx: &Ctx<'_>,
    sha: String,
    why: &str,
    mut done: BuildResult,
) -> BuildOutcome {
    let branch = task_branch(cx.task.id);
    done.artifacts.commit_sha = Some(sha);
    done.artifacts.branch = Some(branch.clone());
    BuildOutcome::FailedWithResult {
        error: format!(
            "{PUSH_CONFLICT}: {} moved while the agent ran and rdev's commit could not be \
             rebased onto it ({why}); the work is on the branch {branch}",
            cx.project.default_branch
        ),
        result: done,
    }
}
