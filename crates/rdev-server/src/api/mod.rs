//! The HTTP API: one `router()` per area, merged here, plus the shared [`AppState`] and
//! JSON fallbacks so that even unknown routes answer `{"error":{"code","message"}}`.
//! Handlers stay thin: parse, call a service, map the result.

mod error;
mod health;

use std::sync::Arc;

use axum::{
    extract::Request,
    http::StatusCode,
    response::{IntoResponse, Response},
    Router,
};
use rdev_store::Db;
use tower_http::{limit::RequestBodyLimitLayer, trace::TraceLayer};

pub use self::error::ApiError;
use crate::config::Config;

/// Largest request body accepted (a prompt at the limit plus JSON overhead).
pub fn body_limit(config: &Config) -> usize {
    config.max_prompt_bytes + 64 * 1024
}

/// What handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub db: Db,
    pub config: Arc<Config>,
}

/// The full API.
pub fn router(state: AppState) -> Router {
    let limit = body_limit(&state.config);
    Router::new()
        .merge(health::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(RequestBodyLimitLayer::new(limit))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn not_found(req: Request) -> Response {
    ApiError::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
    .into_response()
}

async fn method_not_allowed(req: Request) -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
    .into_response()
}
