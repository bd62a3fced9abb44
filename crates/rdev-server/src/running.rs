//! [`RunningTasks`]: the one table of attempts running in this process, keyed by their lease
//! (task id + lease token), each with the token that stops it. The worker pool registers an
//! attempt when it claims it, heartbeats every key in the table, and removes exactly its own
//! key when the attempt ends; `POST /tasks/{id}/cancel` stops whatever attempt of that task
//! runs here at once. Keyed by lease, not task id: a task whose lease expired and that this
//! node claimed again has two entries for a moment, and the old attempt's end can neither
//! remove nor cancel the new one's. Workers on other nodes learn of a cancel through their
//! lease (the store cancels it) at the next heartbeat.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use rdev_core::{LeaseKey, TaskId};
use tokio_util::sync::CancellationToken;

/// Running attempts' stop tokens, by lease.
#[derive(Debug, Clone, Default)]
pub struct RunningTasks {
    inner: Arc<Mutex<HashMap<LeaseKey, CancellationToken>>>,
}

impl RunningTasks {
    /// Registers a running attempt; its token is cancelled by [`Self::cancel`] or
    /// [`Self::lease_lost`].
    pub fn register(&self, key: LeaseKey, token: CancellationToken) {
        self.lock().insert(key, token);
    }

    /// Cancels every attempt of task `id` running here. Returns whether there was one.
    pub fn cancel(&self, id: TaskId) -> bool {
        let table = self.lock();
        let mut found = false;
        for (key, token) in table.iter() {
            if key.task_id == id {
                token.cancel();
                found = true;
            }
        }
        found
    }

    /// Stops the attempt holding `key`, whose lease is gone; other attempts of the same
    /// task are left alone. Returns whether it ran here.
    pub fn lease_lost(&self, key: &LeaseKey) -> bool {
        match self.lock().get(key) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Forgets the attempt holding `key` (it ended).
    pub fn remove(&self, key: &LeaseKey) {
        self.lock().remove(key);
    }

    /// The leases of every attempt running here.
    pub fn keys(&self) -> Vec<LeaseKey> {
        self.lock().keys().copied().collect()
    }

    /// Every running attempt's lease and stop token.
    pub fn entries(&self) -> Vec<(LeaseKey, CancellationToken)> {
        self.lock().iter().map(|(k, t)| (*k, t.clone())).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LeaseKey, CancellationToken>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use rdev_core::LeaseToken;

    use super::*;

    fn key(task: TaskId) -> LeaseKey {
        LeaseKey {
            task_id: task,
            token: LeaseToken(uuid::Uuid::new_v4()),
        }
    }

    #[test]
    fn an_old_attempts_end_neither_removes_nor_cancels_the_new_attempt() {
        let table = RunningTasks::default();
        let task = TaskId::new();
        let (old, new) = (key(task), key(task));
        let (old_stop, new_stop) = (CancellationToken::new(), CancellationToken::new());
        table.register(old, old_stop.clone());
        // The old lease expired; this node claimed the task again.
        table.register(new, new_stop.clone());
        assert!(table.lease_lost(&old));
        assert!(old_stop.is_cancelled() && !new_stop.is_cancelled());
        table.remove(&old);
        assert_eq!(table.keys(), vec![new]);
        // A cancel of the task reaches the attempt that runs now.
        assert!(table.cancel(task));
        assert!(new_stop.is_cancelled());
        table.remove(&new);
        assert!(!table.cancel(task));
    }
}
