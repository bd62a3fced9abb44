//! The rdev-server integration tests as one binary (one link instead of one per file):
//! each module is one area, run one with `cargo test -p rdev-server --test it -- <module>`.

mod common;

mod api_auth;
mod api_builds;
mod api_health;
mod api_openapi;
mod api_projects;
mod api_projects_create;
mod api_projects_woodpecker;
mod callbacks_dispatch;
mod doctor;
mod e2e_build;
mod e2e_build_rebase;
mod e2e_build_results;
mod e2e_build_sessions;
mod escape;
mod gateway;
mod gateway_e2e;
mod gateway_keys;
mod gateway_meter;
mod gateway_upload;
mod housekeeping;
mod providers;
mod secrets_api;
mod secrets_git;
mod secrets_service;
mod templates_build;
mod templates_errors;
mod templates_render;
mod templates_woodpecker;
mod ui;
mod woodpecker_client;
