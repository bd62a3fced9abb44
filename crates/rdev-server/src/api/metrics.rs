//! `GET /metrics`: Prometheus / OpenMetrics text.

use axum::{
    extract::State,
    http::header::CONTENT_TYPE,
    response::{IntoResponse, Response},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{ApiError, AppState};

/// Metrics route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "metrics",
    responses((status = 200, description = "The metrics.",
        content_type = "application/openmetrics-text", body = String)))]
async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let body = state.metrics.render(state.store.as_ref()).await?;
    Ok((
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response())
}
