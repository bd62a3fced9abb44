//! rdev's persistence: sqlx adapters for PostgreSQL (multi-node) and SQLite (single node,
//! the default) behind the ports of `rdev-core`. It owns SQL and connection handling and
//! must not know about HTTP or agents.
//!
//! [`SqlStore`] implements `TaskStore`, `WorkQueue`, `ProjectStore`, `OutboxStore`,
//! `RetentionStore` ([`retention`]), `UsageStore` (model usage per attempt) and
//! `SessionStore` (the agent sessions completed builds reported, per project) on either
//! backend; `docs/queue.md` explains the queue's
//! guarantees. [`SqlSecretRepository`] and [`SqlTokenStore`] hold the credential store's
//! and the API tokens' tables.

mod clock;
pub mod db;
mod notify;
mod outbox_store;
mod project_store;
mod queue;
mod queue_sql;
pub mod retention;
pub mod secrets;
mod sessions;
mod sql;
pub mod sql_store;
mod task_store;
mod tokens;
mod usage;

pub use clock::DatabaseClock;
pub use db::{Backend, Db, DbError};
pub use notify::NOTIFY_CHANNEL;
pub use secrets::SqlSecretRepository;
pub use sql::Ts;
pub use sql_store::{SqlStore, StoreConfig};
pub use tokens::SqlTokenStore;
