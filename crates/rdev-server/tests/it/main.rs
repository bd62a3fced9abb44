//! The rdev-server integration tests as one binary (one link instead of one per file):
//! each module is one area, run one with `cargo test -p rdev-server --test it -- <module>`.

mod common;

mod api_auth;
mod api_builds;
mod api_health;
mod api_openapi;
mod api_projects;
mod api_projects_create;
mod callbacks_dispatch;
mod doctor;
mod e2e_build;
mod escape;
mod gateway;
mod gateway_e2e;
mod housekeeping;
mod providers;
mod secrets_api;
mod secrets_git;
mod secrets_service;
mod templates_errors;
mod templates_render;
mod woodpecker_client;
