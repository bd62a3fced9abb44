//! The glue that lets one body of SQL serve both backends: [`Ts`] (a timestamp stored as
//! `timestamptz` on PostgreSQL and integer UTC milliseconds on SQLite), [`BeginWrite`]
//! (SQLite write transactions start with `BEGIN IMMEDIATE`), the `on_pool!` macro that
//! type-checks one body against each pool, row types, and the mapping of sqlx errors to
//! [`StoreError`]. It must not hold queue or task rules.

use std::future::Future;

use chrono::{DateTime, Utc};
use rdev_core::{
    credentials::InjectionPlan, queue::truncate_millis, AgentProvider, AttemptRecord, BranchName,
    BuildResult, BuildSpec, OutboxRow, Project, ProjectName, RepoUrl, StoreError, TaskEvent,
    TaskId, TaskStatus, WoodpeckerRepo, WorkTask,
};
use sqlx::{
    encode::IsNull,
    error::BoxDynError,
    postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef},
    sqlite::{SqliteArgumentValue, SqliteTypeInfo, SqliteValueRef},
    types::Json,
    Decode, Encode, PgPool, Postgres, Sqlite, SqlitePool, Transaction, Type,
};
use uuid::Uuid;

/// Runs `$body` with `$pool` bound to the concrete pool of either backend. The body is
/// compiled once per backend, so the same SQL text and bindings serve both.
macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Postgres($pool) => $body,
            $crate::db::Db::Sqlite($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// A UTC instant with millisecond precision, stored natively on each backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ts(pub DateTime<Utc>);

impl From<DateTime<Utc>> for Ts {
    fn from(t: DateTime<Utc>) -> Self {
        Self(truncate_millis(t))
    }
}

impl Type<Postgres> for Ts {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for Ts {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <DateTime<Utc> as Encode<Postgres>>::encode(truncate_millis(self.0), buf)
    }
}

impl<'r> Decode<'r, Postgres> for Ts {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Self(<DateTime<Utc> as Decode<Postgres>>::decode(value)?))
    }
}

impl Type<Sqlite> for Ts {
    fn type_info() -> SqliteTypeInfo {
        <i64 as Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <i64 as Type<Sqlite>>::compatible(ty)
    }
}

impl<'q> Encode<'q, Sqlite> for Ts {
    fn encode_by_ref(&self, buf: &mut Vec<SqliteArgumentValue<'q>>) -> Result<IsNull, BoxDynError> {
        <i64 as Encode<Sqlite>>::encode(self.0.timestamp_millis(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for Ts {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let ms = <i64 as Decode<Sqlite>>::decode(value)?;
        DateTime::from_timestamp_millis(ms)
            .map(Self)
            .ok_or_else(|| format!("timestamp {ms} ms is out of range").into())
    }
}

/// Opens a write transaction: `BEGIN IMMEDIATE` on SQLite takes the write lock up front,
/// so a transaction never fails half-way when it upgrades from reading to writing.
pub trait BeginWrite {
    /// The backend.
    type Db: sqlx::Database;
    /// Starts the transaction.
    fn begin_write(
        &self,
    ) -> impl Future<Output = Result<Transaction<'static, Self::Db>, sqlx::Error>> + Send;
}

impl BeginWrite for PgPool {
    type Db = Postgres;
    fn begin_write(
        &self,
    ) -> impl Future<Output = Result<Transaction<'static, Postgres>, sqlx::Error>> + Send {
        self.begin()
    }
}

impl BeginWrite for SqlitePool {
    type Db = Sqlite;
    fn begin_write(
        &self,
    ) -> impl Future<Output = Result<Transaction<'static, Sqlite>, sqlx::Error>> + Send {
        self.begin_with("BEGIN IMMEDIATE")
    }
}

/// Maps a database error: unique violations become `Conflict`, everything else
/// A stored value that breaks a domain rule or cannot be decoded.
pub(crate) fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// `Unavailable` (the message names the failure, never bound values).
pub fn db_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            StoreError::Conflict(d.message().to_owned())
        }
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => corrupt(&e),
        _ => StoreError::Unavailable(e.to_string()),
    }
}

/// The task columns every task query selects, in [`TaskRow`] order.
pub const TASK_COLS: &str =
    "id, project, spec, status, attempt, created_at, started_at, finished_at, result, error, retry_of";

/// A `tasks` row as stored.
#[derive(Debug, sqlx::FromRow)]
pub struct TaskRow {
    pub id: Uuid,
    pub project: String,
    pub spec: Json<BuildSpec>,
    pub status: String,
    pub attempt: i32,
    pub created_at: Ts,
    pub started_at: Option<Ts>,
    pub finished_at: Option<Ts>,
    /// `Option` inside too: earlier versions of the bench completed tasks with JSON `null`.
    pub result: Option<Json<Option<BuildResult>>>,
    pub error: Option<String>,
    pub retry_of: Option<Uuid>,
}

impl TaskRow {
    /// The domain task; a row that breaks a domain rule is `Corrupt`.
    pub fn into_task(self) -> Result<WorkTask, StoreError> {
        Ok(WorkTask {
            id: TaskId(self.id),
            project: ProjectName::parse(&self.project).map_err(corrupt)?,
            spec: self.spec.0,
            status: self.status.parse::<TaskStatus>().map_err(corrupt)?,
            attempt: u32::try_from(self.attempt).unwrap_or(0),
            created_at: self.created_at.0,
            started_at: self.started_at.map(|t| t.0),
            finished_at: self.finished_at.map(|t| t.0),
            result: self.result.and_then(|j| j.0),
            error: self.error,
            retry_of: self.retry_of.map(TaskId),
        })
    }
}

/// A `projects` row as stored.
#[derive(Debug, sqlx::FromRow)]
pub struct ProjectRow {
    pub name: String,
    pub repo_url: String,
    pub default_branch: String,
    pub template: Option<String>,
    pub woodpecker_repo_id: Option<i64>,
    pub deploy_url_pattern: Option<String>,
    pub provider: Option<String>,
    pub secrets: Json<InjectionPlan>,
    pub network_allow: Json<Vec<String>>,
    pub max_cost_usd: Option<f64>,
    pub max_tokens: Option<i64>,
    pub push_protection: String,
    pub push_protection_allow: Json<Vec<String>>,
    pub woodpecker_repo: Option<String>,
    pub max_parallel_builds: i32,
    pub created_repo: Option<String>,
}

impl ProjectRow {
    /// The domain project.
    pub fn into_project(self) -> Result<Project, StoreError> {
        Ok(Project {
            name: ProjectName::parse(&self.name).map_err(corrupt)?,
            repo_url: RepoUrl::from_stored(self.repo_url),
            default_branch: BranchName::from_stored(self.default_branch),
            template: self.template,
            woodpecker_repo_id: self.woodpecker_repo_id,
            woodpecker_repo: self.woodpecker_repo.map(WoodpeckerRepo::from_stored),
            deploy_url_pattern: self.deploy_url_pattern,
            provider: self
                .provider
                .map(|p| p.parse::<AgentProvider>())
                .transpose()
                .map_err(corrupt)?,
            secrets: self.secrets.0,
            created_repo: self.created_repo,
            network_allow: self.network_allow.0,
            max_cost_usd: self.max_cost_usd,
            max_tokens: self.max_tokens.map(|t| u64::try_from(t).unwrap_or(0)),
            push_protection: self.push_protection.parse().map_err(corrupt)?,
            push_protection_allow: self.push_protection_allow.0,
            max_parallel_builds: u32::try_from(self.max_parallel_builds).map_err(corrupt)?,
        })
    }
}

/// A `task_events` row.
#[derive(Debug, sqlx::FromRow)]
pub struct EventRow {
    pub task_id: Uuid,
    pub seq: i64,
    pub at: Ts,
    pub kind: String,
    pub payload: Json<serde_json::Value>,
}

impl From<EventRow> for TaskEvent {
    fn from(r: EventRow) -> Self {
        Self {
            task_id: TaskId(r.task_id),
            seq: r.seq,
            at: r.at.0,
            kind: r.kind,
            payload: r.payload.0,
        }
    }
}

/// A `task_attempts` row.
#[derive(Debug, sqlx::FromRow)]
pub struct AttemptRow {
    pub attempt: i32,
    pub worker: String,
    pub started_at: Ts,
    pub finished_at: Option<Ts>,
    pub outcome: String,
    pub error: Option<String>,
}

impl From<AttemptRow> for AttemptRecord {
    fn from(r: AttemptRow) -> Self {
        Self {
            attempt: u32::try_from(r.attempt).unwrap_or(0),
            worker: r.worker,
            started_at: r.started_at.0,
            finished_at: r.finished_at.map(|t| t.0),
            outcome: r.outcome,
            error: r.error,
        }
    }
}

/// The outbox columns, in [`OutboxDbRow`] order.
pub const OUTBOX_COLS: &str = "id, task_id, url, payload, created_at, attempts, \
     next_attempt_at, last_error, delivered_at, expired_at";

/// A `callback_outbox` row.
#[derive(Debug, sqlx::FromRow)]
pub struct OutboxDbRow {
    pub id: i64,
    pub task_id: Uuid,
    pub url: String,
    pub payload: Json<serde_json::Value>,
    pub created_at: Ts,
    pub attempts: i32,
    pub next_attempt_at: Ts,
    pub last_error: Option<String>,
    pub delivered_at: Option<Ts>,
    pub expired_at: Option<Ts>,
}

impl From<OutboxDbRow> for OutboxRow {
    fn from(r: OutboxDbRow) -> Self {
        Self {
            id: r.id,
            task_id: TaskId(r.task_id),
            url: r.url,
            payload: r.payload.0,
            created_at: r.created_at.0,
            attempts: u32::try_from(r.attempts).unwrap_or(0),
            next_attempt_at: r.next_attempt_at.0,
            last_error: r.last_error,
            delivered_at: r.delivered_at.map(|t| t.0),
            expired_at: r.expired_at.map(|t| t.0),
        }
    }
}
