//! Storage ports: tasks and their events ([`TaskStore`]), projects ([`ProjectStore`]) and
//! the callback outbox ([`OutboxStore`]), with the storage-agnostic records they exchange
//! and [`StoreError`]. The queue's own port lives in [`crate::queue`]. Nothing here knows
//! SQL or opens a connection; adapters in `rdev-store` implement these traits.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    BuildSpec, ErrorCode, Project, ProjectName, SecretName, TaskId, TaskStatus, TransitionError,
    WorkTask,
};

/// What can go wrong in a store. Codes are stable; messages never contain secret values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The record does not exist.
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    /// The write conflicts with an existing record (e.g. a project name already taken).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The caller's lease on the task is gone (expired, reaped, cancelled or completed):
    /// it must stop working on the task and must not retry the write.
    #[error("lease on task {task_id} is no longer held")]
    LeaseLost { task_id: TaskId },
    /// The task's status does not allow the requested change.
    #[error(transparent)]
    InvalidTransition(#[from] TransitionError),
    /// A stored record could not be read back into a domain type.
    #[error("stored record is unreadable: {0}")]
    Corrupt(String),
    /// The database failed or could not be reached.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

impl ErrorCode for StoreError {
    fn code(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            Self::Conflict(_) => "conflict",
            Self::LeaseLost { .. } => "lease_lost",
            Self::InvalidTransition(_) => "invalid_transition",
            Self::Corrupt(_) => "corrupt_record",
            Self::Unavailable(_) => "store_unavailable",
        }
    }
}

/// A task to insert together with its queue row.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    pub project: ProjectName,
    pub spec: BuildSpec,
    /// Idempotency key, unique per project: a second insert returns the first task.
    pub unique_key: Option<String>,
    /// Lower runs first; ties go to the earlier `run_at`, then the older id.
    pub priority: i16,
    /// Not claimable before this instant; `None` means now.
    pub run_at: Option<DateTime<Utc>>,
    /// Attempts before the task is dead (status `failed`); at least 1.
    pub max_attempts: u32,
}

impl NewTask {
    /// Attempts a task gets when the caller does not say: build runs are expensive, so a
    /// few retries cover a crashed worker without burning tokens on a broken request.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

    /// A task with default priority, runnable now, no idempotency key.
    pub fn new(project: ProjectName, spec: BuildSpec) -> Self {
        Self {
            project,
            spec,
            unique_key: None,
            priority: 0,
            run_at: None,
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
        }
    }
}

/// The result of an insert: the task, and whether this call created it (`false` when the
/// idempotency key matched an existing task, which is returned unchanged).
#[derive(Debug, Clone, PartialEq)]
pub struct Enqueued {
    pub task: WorkTask,
    pub created: bool,
    /// The idempotency key matched a task created from a different request (its spec's
    /// [`BuildSpec::fingerprint`] differs): nothing was inserted, `task` is that other task,
    /// and the caller must refuse the request rather than pass it off as the same one.
    /// `false` for tasks stored before fingerprints were recorded (they cannot tell).
    pub key_reused: bool,
}

/// Filters for [`TaskStore::list`]; newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    pub project: Option<ProjectName>,
    /// Only tasks of one of these projects (a project-limited API token's listing);
    /// `None` means no such restriction.
    pub projects: Option<Vec<ProjectName>>,
    pub status: Option<TaskStatus>,
    /// Only tasks older than this id (keyset pagination).
    pub before: Option<TaskId>,
    /// At most this many; 0 means the store's default (100).
    pub limit: u32,
}

/// One stored agent event of a task, numbered per task from 1 without gaps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEvent {
    pub task_id: TaskId,
    pub seq: i64,
    pub at: DateTime<Utc>,
    /// The event's kind, e.g. `message`, `tool_use`.
    pub kind: String,
    pub payload: serde_json::Value,
}

/// One attempt of a task: who ran it and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub worker: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `running`, `completed`, `retry`, `failed`, `lease_expired` or `cancelled`.
    pub outcome: String,
    pub error: Option<String>,
}

/// A callback owed to a client, written in the transaction that finished its task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxRow {
    pub id: i64,
    pub task_id: TaskId,
    pub url: String,
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// Set when the dispatcher gave up on it.
    pub expired_at: Option<DateTime<Utc>>,
}

/// Tasks and their event streams.
#[async_trait]
pub trait TaskStore: Send + Sync {
    /// Inserts a task and its queue row in one transaction, honouring `unique_key`.
    async fn create(&self, task: NewTask) -> Result<Enqueued, StoreError>;
    /// Inserts many tasks in one transaction (one wake-up for all of them).
    async fn create_many(&self, tasks: Vec<NewTask>) -> Result<Vec<Enqueued>, StoreError>;
    /// One task by id.
    async fn get(&self, id: TaskId) -> Result<WorkTask, StoreError>;
    /// Queues a new task with the spec of the failed or cancelled task `id`, linked to it
    /// by `retry_of`. Idempotent: a task is retried once; asking again returns that retry
    /// (`created: false`). Any other status is `InvalidTransition`.
    async fn retry(&self, id: TaskId) -> Result<Enqueued, StoreError>;
    /// Tasks matching `filter`, newest first.
    async fn list(&self, filter: &TaskFilter) -> Result<Vec<WorkTask>, StoreError>;
    /// The attempts of a task, oldest first.
    async fn attempts(&self, id: TaskId) -> Result<Vec<AttemptRecord>, StoreError>;
    /// How many tasks are in each status (statuses with none are left out).
    async fn status_counts(&self) -> Result<Vec<(TaskStatus, u64)>, StoreError>;
    /// Appends an event and returns its per-task sequence number.
    async fn append_event(
        &self,
        id: TaskId,
        kind: &str,
        payload: serde_json::Value,
    ) -> Result<i64, StoreError>;
    /// Events with `seq > after`, in order, at most `limit`.
    async fn events_since(
        &self,
        id: TaskId,
        after: i64,
        limit: u32,
    ) -> Result<Vec<TaskEvent>, StoreError>;
}

/// What [`ProjectStore::delete_project`] did in the database. Files (the repository rdev
/// created, mirrors) are the caller's to remove, after the commit.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectDeletion {
    /// The project as it was; its `created_repo` is the directory the caller may remove.
    pub project: Project,
    /// Tasks that were queued or running and are now cancelled; a running one's worker
    /// lost its lease (it stops at its next heartbeat, or at once on the node that is told).
    pub cancelled: Vec<TaskId>,
    /// Secrets of scope `project:<name>` that were deleted (every version; the callback
    /// signing secret included), by name.
    pub secrets_removed: Vec<SecretName>,
    /// Undelivered callbacks of the project's tasks given up on: the secret that would
    /// sign them is gone, and a project created again under the name must not sign them.
    pub callbacks_expired: u64,
    /// API tokens limited to this project alone, now revoked: an empty project list means
    /// "every project", and a project created again under the name is another project.
    pub tokens_revoked: Vec<String>,
    /// API tokens limited to this and other projects, which lost this one.
    pub tokens_narrowed: Vec<String>,
}

/// Projects by name.
#[async_trait]
pub trait ProjectStore: Send + Sync {
    /// Inserts a project (with its `created_repo`); `Conflict` if the name is taken.
    async fn create_project(&self, project: &Project) -> Result<(), StoreError>;
    /// One project.
    async fn get_project(&self, name: &ProjectName) -> Result<Project, StoreError>;
    /// All projects by name.
    async fn list_projects(&self) -> Result<Vec<Project>, StoreError>;
    /// Replaces a project's fields; `NotFound` if it does not exist. `created_repo` is not
    /// a field a change can set: it keeps the value stored at creation.
    async fn update_project(&self, project: &Project) -> Result<(), StoreError>;
    /// Deletes a project and what belongs only to it, in one transaction: its queued and
    /// running tasks are cancelled (as [`crate::WorkQueue::cancel`] does), the idempotency
    /// keys of all its tasks are freed, its undelivered callbacks expire, every secret of
    /// scope `project:<name>` is deleted with an audit row by `actor`, and its sessions
    /// ([`crate::SessionStore`]) can no longer be resumed. Finished tasks
    /// stay as history until retention prunes them. `NotFound` if it does not exist.
    async fn delete_project(
        &self,
        name: &ProjectName,
        actor: &str,
    ) -> Result<ProjectDeletion, StoreError>;
    /// Undoes a [`Self::create_project`] whose set-up failed, in one transaction: the row
    /// goes, and a task queued for the project meanwhile is cancelled (key freed, callback
    /// expired) as [`Self::delete_project`] does. Unlike a deletion it keeps the secrets of
    /// scope `project:<name>` and the API tokens limited to the name: they may predate the
    /// project (a deploy token is often stored before the project that uses it), and a
    /// failed creation must leave them as it found them. `NotFound` if it does not exist.
    async fn discard_project(&self, name: &ProjectName) -> Result<ProjectDeletion, StoreError>;
}

/// The callback outbox the dispatcher drains.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Bumped after this store committed a write that may have added a due row (a task
    /// ended or was cancelled), so the dispatcher of this process sends it at once; rows
    /// written by other nodes are found by polling.
    fn subscribe_outbox(&self) -> crate::signal::WorkSignal;
    /// Takes up to `limit` due rows and hides them from other dispatchers for `hold`
    /// (their `next_attempt_at` moves by that much), so two dispatchers rarely send one row.
    async fn claim_due(
        &self,
        limit: u32,
        hold: std::time::Duration,
    ) -> Result<Vec<OutboxRow>, StoreError>;
    /// Records a successful delivery.
    async fn mark_delivered(&self, id: i64) -> Result<(), StoreError>;
    /// Records a failed attempt; retried at `retry_at`, or given up (expired) when `None`.
    async fn mark_failed(
        &self,
        id: i64,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError>;
    /// Every outbox row of a task, oldest first (attempts are visible per task).
    async fn outbox_for_task(&self, id: TaskId) -> Result<Vec<OutboxRow>, StoreError>;
}

/// Every storage port in one object, so the API, the workers and the dispatcher share one
/// injected store.
pub trait Store:
    TaskStore
    + crate::WorkQueue
    + ProjectStore
    + OutboxStore
    + crate::RetentionStore
    + crate::UsageStore
    + crate::SessionStore
    + std::fmt::Debug
{
}

impl<
        T: TaskStore
            + crate::WorkQueue
            + ProjectStore
            + OutboxStore
            + crate::RetentionStore
            + crate::UsageStore
            + crate::SessionStore
            + std::fmt::Debug,
    > Store for T
{
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_have_stable_codes() {
        let lost = StoreError::LeaseLost {
            task_id: TaskId::new(),
        };
        assert_eq!(lost.code(), "lease_lost");
        let t = StoreError::from(
            TaskStatus::Completed
                .transition(TaskStatus::Queued)
                .unwrap_err(),
        );
        assert_eq!(t.code(), "invalid_transition");
    }
}
