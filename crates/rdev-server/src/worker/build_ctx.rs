//! [`Ctx`]: what one build works with (the services, the task and its lease, the project,
//! the stop token), and the two things every part of a build does with it: record a
//! progress event and check, right before an irreversible step, that the lease is still
//! held. Shared by `worker/task.rs` and `worker/publish.rs`; it decides nothing about a build.

use rdev_core::{LeaseKey, Project, WorkTask};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::events;
use crate::services::Services;

/// What one build works with.
pub(super) struct Ctx<'a> {
    pub(super) deps: &'a Services,
    pub(super) task: &'a WorkTask,
    pub(super) key: LeaseKey,
    pub(super) project: Project,
    pub(super) stop: &'a CancellationToken,
}

impl Ctx<'_> {
    /// Records an event of `kind` for the task (`progress`, ...).
    pub(super) async fn note(&self, kind: &str, payload: Value) {
        events::note(self.deps.store.as_ref(), self.task.id, kind, payload).await;
    }

    /// Whether the lease is still ours, checked with a heartbeat right now (before a push).
    pub(super) async fn still_held(&self) -> bool {
        if self.stop.is_cancelled() {
            return false;
        }
        let lease = self.deps.config.worker_lease();
        match self
            .deps
            .store
            .heartbeat(std::slice::from_ref(&self.key), lease)
            .await
        {
            Ok(o) => o.lost.is_empty(),
            Err(_) => false,
        }
    }
}

/// The branch a build's work goes to when it does not land on the default branch: always
/// without `auto_deploy`, and after a push conflict.
pub(super) fn task_branch(task: rdev_core::TaskId) -> String {
    format!("rdev/{task}")
}
