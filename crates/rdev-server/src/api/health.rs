//! Liveness and readiness: `/healthz` says the process answers, `/readyz` that its
//! database does too. Neither touches anything else.

use axum::{extract::State, http::StatusCode, routing::get, Json, Router};
use serde_json::{json, Value};

use super::{ApiError, AppState};

/// `GET /healthz`, `GET /readyz`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    match state.db.ping().await {
        Ok(()) => Ok(Json(
            json!({"status": "ready", "database": state.db.backend().as_str()}),
        )),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                format!(
                    "the {} database does not answer",
                    state.db.backend().as_str()
                ),
            ))
        }
    }
}
