//! The rdev application: configuration, the HTTP API, the worker pool and the adapters that
//! only the server needs (git workspaces, Woodpecker, callbacks). `Application::build`
//! wires them; `main.rs` in `rdev-cli` stays thin.

pub mod agent_setup;
pub mod api;
pub mod app;
pub mod callbacks;
pub mod config;
pub mod doctor;
pub mod gateway;
pub mod git;
pub mod housekeeping;
pub mod live;
pub mod metrics;
pub mod project_service;
pub mod running;
pub mod scan;
pub mod secrets;
pub mod services;
pub mod sessions;
pub mod telemetry;
pub mod templates;
pub mod tokens;
pub mod ui;
pub mod woodpecker;
pub mod worker;

pub use app::Application;
pub use config::Config;
