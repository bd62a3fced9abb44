//! rdev's persistence: sqlx adapters for PostgreSQL (multi-node) and SQLite (single node,
//! the default) behind the ports of `rdev-core`. It owns SQL and connection handling and
//! must not know about HTTP or agents.
//!
//! [`SqlStore`] implements `TaskStore`, `WorkQueue`, `ProjectStore` and `OutboxStore` on
//! either backend; `docs/queue.md` explains the queue's guarantees.

pub mod db;
mod notify;
mod projects;
mod queue;
pub mod secrets;
mod sql;
pub mod store;

pub use db::{Backend, Db, DbError};
pub use secrets::SqlSecretRepository;
pub use sql::Ts;
pub use store::{SqlStore, StoreConfig, NOTIFY_CHANNEL};
