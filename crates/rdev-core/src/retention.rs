//! The retention port ([`RetentionStore`]): how old history (finished tasks with their
//! events, attempts and callback rows, and the secret audit log) is deleted so the
//! database does not grow without bound. It states what may go and what must stay; the
//! adapters in `rdev-store` hold the SQL, and the server decides when to call it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::StoreError;

/// What one [`RetentionStore::prune_before`] call deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    pub tasks: u64,
    pub events: u64,
    pub attempts: u64,
    pub callbacks: u64,
    pub audit: u64,
    /// Another node was pruning (PostgreSQL): this call stopped and left the rest to it.
    pub skipped: bool,
}

impl PruneReport {
    /// Rows deleted, all tables together.
    pub fn total(&self) -> u64 {
        self.tasks + self.events + self.attempts + self.callbacks + self.audit
    }
}

/// Deletes history older than a cutoff, in bounded batches.
#[async_trait]
pub trait RetentionStore: Send + Sync {
    /// Deletes what ended before `cutoff`, at most `batch` rows per statement, repeating a
    /// statement until it deletes fewer than `batch`:
    ///
    /// - finished tasks (`completed`, `failed`, `cancelled`) whose `finished_at` is before
    ///   `cutoff`, with their events, attempts and callback rows, unless one of the task's
    ///   callbacks is still being delivered (neither delivered nor expired): such a task
    ///   and its rows stay until the dispatcher is done with it;
    /// - secret audit rows written before `cutoff`.
    ///
    /// Queued and running tasks are never deleted, however old. Every statement is
    /// idempotent, so several nodes may call this at once; an adapter may let only one of
    /// them work at a time and report the others [`PruneReport::skipped`].
    async fn prune_before(
        &self,
        cutoff: DateTime<Utc>,
        batch: u32,
    ) -> Result<PruneReport, StoreError>;
}
