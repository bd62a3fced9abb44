//! [`TaskCancels`]: cancellation tokens of the tasks running in this process, so that
//! `POST /tasks/{id}/cancel` stops a local agent at once. Workers on other nodes learn of a
//! cancel through their lease (the store cancels it) at the next heartbeat.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use rdev_core::TaskId;
use tokio_util::sync::CancellationToken;

/// Running tasks' cancellation tokens, by task id.
#[derive(Debug, Clone, Default)]
pub struct TaskCancels {
    inner: Arc<Mutex<HashMap<TaskId, CancellationToken>>>,
}

impl TaskCancels {
    /// Registers a running task; its token is cancelled by [`TaskCancels::cancel`].
    pub fn register(&self, id: TaskId, token: CancellationToken) {
        self.lock().insert(id, token);
    }

    /// Cancels the task if it runs here. Returns whether it did.
    pub fn cancel(&self, id: TaskId) -> bool {
        match self.lock().get(&id) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Forgets a finished task.
    pub fn remove(&self, id: TaskId) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, CancellationToken>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}
