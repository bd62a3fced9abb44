//! The shapes `/tasks` answers, as types with a schema (`utoipa::ToSchema`), so the
//! OpenAPI document says what the handlers in `super::tasks` send. No handler, no store.

use chrono::{DateTime, Utc};
use rdev_core::{
    AttemptRecord, BuildResult, BuildSpec, OutboxRow, ProjectName, TaskId, TaskStatus, TaskUsage,
    WorkTask,
};
use serde::Serialize;
use utoipa::ToSchema;

/// A task: one build request and where it is in its life.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskView {
    pub id: TaskId,
    pub project: ProjectName,
    pub status: TaskStatus,
    /// The attempt running or last run (0 before the first).
    pub attempt: u32,
    pub created_at: DateTime<Utc>,
    #[schema(required)]
    pub started_at: Option<DateTime<Utc>>,
    #[schema(required)]
    pub finished_at: Option<DateTime<Utc>>,
    pub spec: BuildSpec,
    /// What the build produced: a completed task's result, or what a failed one pushed.
    #[schema(required)]
    pub result: Option<BuildResult>,
    /// Why the task failed.
    #[schema(required)]
    pub error: Option<String>,
    /// The task this one retries (`POST /tasks/{id}/retry`).
    #[schema(required)]
    pub retry_of: Option<TaskId>,
}

impl TaskView {
    /// The public view of `t`.
    pub fn of(t: &WorkTask) -> Self {
        Self {
            id: t.id,
            project: t.project.clone(),
            status: t.status,
            attempt: t.attempt,
            created_at: t.created_at,
            started_at: t.started_at,
            finished_at: t.finished_at,
            spec: t.spec.clone(),
            result: t.result.clone(),
            error: t.error.clone(),
            retry_of: t.retry_of,
        }
    }
}

/// Tasks, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskList {
    pub tasks: Vec<TaskView>,
}

/// A task with its attempts, its callback deliveries and the model usage the gateway
/// metered.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskDetail {
    #[serde(flatten)]
    pub task: TaskView,
    pub attempts: Vec<AttemptRecord>,
    pub callbacks: Vec<CallbackDelivery>,
    pub usage: TaskUsage,
}

/// How the delivery of a task's callback is going.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallbackDelivery {
    pub url: String,
    /// Delivery attempts so far.
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    #[schema(required)]
    pub last_error: Option<String>,
    #[schema(required)]
    pub delivered_at: Option<DateTime<Utc>>,
    /// Set when the dispatcher gave up on it.
    #[schema(required)]
    pub expired_at: Option<DateTime<Utc>>,
}

impl CallbackDelivery {
    /// The public part of an outbox row (never its payload).
    pub fn of(c: &OutboxRow) -> Self {
        Self {
            url: c.url.clone(),
            attempts: c.attempts,
            next_attempt_at: c.next_attempt_at,
            last_error: c.last_error.clone(),
            delivered_at: c.delivered_at,
            expired_at: c.expired_at,
        }
    }
}

/// A retry: the new task, and the task it retries.
#[derive(Debug, Serialize, ToSchema)]
pub struct Retried {
    pub task_id: TaskId,
    pub status: TaskStatus,
    pub retry_of: TaskId,
}

/// One server-sent event of `GET /tasks/{id}/events`, as a client parses it: `event` the
/// kind (`end` and `error` close the stream), `data` its JSON text, `id` the event's `seq`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SseEvent {
    pub event: String,
    /// JSON: `{"seq","at","kind","payload"}`, `{"status"}` for `end`, `{"code","message"}`
    /// for `error`.
    pub data: String,
    pub id: Option<String>,
}
