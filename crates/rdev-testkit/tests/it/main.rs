//! The rdev-testkit integration tests as one binary (one link instead of one per file):
//! the real agent CLIs against the scripted model, and the model server itself; run one
//! with `cargo test -p rdev-testkit --test it -- <module>`.

mod common;

mod claude_e2e;
mod opencode_e2e;
mod server;
