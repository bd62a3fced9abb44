//! The HTTP API: one `router()` per area, merged here, plus the shared [`AppState`] and
//! JSON fallbacks so that even unknown routes answer `{"error":{"code","message"}}`.
//! Handlers stay thin: parse, call a service, map the result.

mod agents;
mod auth;
mod builds;
mod error;
mod extract;
mod health;
mod metrics;
pub mod openapi;
mod openapi_templates;
mod project_routes;
mod project_schema;
mod secrets;
mod task_schema;
mod tasks;
mod templates;

use std::sync::Arc;

use axum::{
    extract::{DefaultBodyLimit, Request},
    http::StatusCode,
    response::{IntoResponse, Response},
    Router,
};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use self::error::ApiError;
use crate::{config::Config, services::Services};
pub use rdev_core::Store;

/// Largest request body accepted (a prompt at the limit plus JSON overhead).
pub fn body_limit(config: &Config) -> usize {
    config.max_prompt_bytes + 64 * 1024
}

/// What handlers share: the node's [`Services`].
pub type AppState = Arc<Services>;

/// 422 `unknown_template` unless `name` is `None` or a known template.
pub(crate) fn check_template(state: &Services, name: Option<&str>) -> Result<(), ApiError> {
    if let Some(name) = name {
        state
            .templates
            .get(name)
            .map_err(|e| ApiError::from_code(StatusCode::UNPROCESSABLE_ENTITY, &e))?;
    }
    Ok(())
}

/// Every route with its OpenAPI description: [`router`] serves them, [`openapi`]
/// describes them, so no route is served undocumented.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(health::router())
        .merge(secrets::router())
        .merge(project_routes::router())
        .merge(builds::router())
        .merge(tasks::router())
        .merge(templates::router())
        .merge(agents::router())
        .merge(metrics::router())
        .merge(openapi::router())
}

/// The full API.
pub fn router(state: AppState) -> Router {
    let limit = body_limit(&state.config);
    let (routes, _) = routes().split_for_parts();
    routes
        // After routing, so it knows the route and its parameters; unknown routes get
        // their 404 after authentication only.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(DefaultBodyLimit::max(limit))
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
