//! The rdev-cli integration tests as one binary (one link instead of one per file): each
//! module drives the real `rdev` binary; run one with `cargo test -p rdev-cli --test it -- <module>`.

mod common;

mod cli_agent;
mod cli_build;
mod cli_crash;
mod cli_doctor;
mod cli_secret;
mod cli_serve;
mod cli_token;
mod schemathesis;
