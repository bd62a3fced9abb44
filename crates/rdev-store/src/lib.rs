//! rdev's persistence: sqlx adapters for PostgreSQL (multi-node) and SQLite (single node,
//! the default) behind the ports of `rdev-core`. It owns SQL and connection handling and
//! must not know about HTTP or agents.

pub mod db;

pub use db::{Backend, Db, DbError};
