//! The rdev-agents integration tests as one binary (one link instead of one per file):
//! each module is one area, run one with `cargo test -p rdev-agents --test it -- <module>`.

mod opencode_common;

mod claude_cli;
mod claude_process;
mod opencode_adapter;
mod opencode_server;
