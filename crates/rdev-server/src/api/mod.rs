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
mod project_routes;
mod secrets;
mod tasks;
mod templates;

use std::sync::Arc;

use axum::{
    extract::{DefaultBodyLimit, Request},
    http::StatusCode,
    response::{IntoResponse, Response},
    Router,
};
use rdev_core::ProviderRegistry;
use rdev_store::Db;
use tower_http::trace::TraceLayer;

pub use self::error::ApiError;
use crate::{
    cancels::TaskCancels, config::Config, doctor::readiness::Readiness, git::GitWorkspaces,
    metrics::Metrics, secrets::SecretService, templates::TemplateRegistry, tokens::TokenService,
};
pub use rdev_core::Store;

/// Largest request body accepted (a prompt at the limit plus JSON overhead).
pub fn body_limit(config: &Config) -> usize {
    config.max_prompt_bytes + 64 * 1024
}

/// What handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub db: Db,
    pub store: Arc<dyn Store>,
    pub templates: Arc<TemplateRegistry>,
    pub git: GitWorkspaces,
    /// The code agents this node can run.
    pub registry: Arc<ProviderRegistry>,
    /// Whether each provider can take a build (`GET /agents`, `/readyz`).
    pub readiness: Readiness,
    /// Cancellation of tasks running on this node.
    pub cancels: TaskCancels,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Notified when a task on this node finished, so its callback leaves at once.
    pub outbox_wakeup: Arc<tokio::sync::Notify>,
    pub config: Arc<Config>,
    /// The credential store (SPEC 5).
    pub secrets: Arc<SecretService>,
    /// API tokens: who may call the API and for what.
    pub tokens: TokenService,
}

impl AppState {
    /// 422 `unknown_template` unless `name` is `None` or a known template.
    pub fn check_template(&self, name: Option<&str>) -> Result<(), ApiError> {
        if let Some(name) = name {
            self.templates
                .get(name)
                .map_err(|e| ApiError::from_code(StatusCode::UNPROCESSABLE_ENTITY, &e))?;
        }
        Ok(())
    }
}

/// The full API.
pub fn router(state: AppState) -> Router {
    let limit = body_limit(&state.config);
    Router::new()
        .merge(health::router())
        .merge(secrets::router())
        .merge(project_routes::router())
        .merge(builds::router())
        .merge(tasks::router())
        .merge(templates::router())
        .merge(agents::router())
        .merge(metrics::router())
        .merge(openapi::router())
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
