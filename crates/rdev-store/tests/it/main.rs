//! The rdev-store integration tests as one binary (one link instead of one per file):
//! the conformance suites run every body on SQLite and PostgreSQL; run one with
//! `cargo test -p rdev-store --test it -- <module>`.

mod common;

mod crash;
mod discard_conformance;
mod project_order_conformance;
mod queue_conformance;
mod queue_wake_conformance;
mod retention_conformance;
mod secrets_conformance;
mod sessions_conformance;
mod store_conformance;
mod tokens_conformance;
mod usage_conformance;
