//! Liveness and readiness: `/healthz` says the process answers; `/readyz` that its
//! database does and at least one agent provider can take a build (`providers` lists the
//! ready ones and why the others are not), 503 otherwise. Neither calls anything beyond the
//! database (provider readiness needs no network call).

use axum::{extract::State, http::StatusCode, routing::get, Json, Router};
use serde_json::{json, Map, Value};

use super::{ApiError, AppState};
use crate::doctor::readiness::ProviderState;

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
    if let Err(e) = state.db.ping().await {
        tracing::warn!(error = %e, "readiness check failed");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            format!(
                "the {} database does not answer",
                state.db.backend().as_str()
            ),
        ));
    }
    let states = state.readiness.states(&state.config, &state.registry).await;
    let ready: Vec<&str> = states
        .iter()
        .filter(|(_, s)| s.is_ready())
        .map(|(id, _)| id.as_str())
        .collect();
    let not_ready: Map<String, Value> = states
        .iter()
        .filter(|(_, s)| !s.is_ready())
        .map(|(id, s)| (id.clone(), json!(s)))
        .collect();
    if ready.is_empty() {
        let why: Vec<String> = states
            .iter()
            .map(|(id, s)| match s {
                ProviderState::Ready => format!("{id}: ready"),
                ProviderState::NotConfigured { reason, .. }
                | ProviderState::Unavailable { reason, .. } => {
                    format!("{id}: {} ({reason})", s.as_str())
                }
            })
            .collect();
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_provider_ready",
            if why.is_empty() {
                "no agent provider is enabled (agents.enabled); `rdev doctor` says more".to_owned()
            } else {
                format!(
                    "no agent provider can take a build: {}; `rdev doctor` says how to fix it",
                    why.join("; ")
                )
            },
        ));
    }
    Ok(Json(json!({
        "status": "ready",
        "database": state.db.backend().as_str(),
        "providers": {"ready": ready, "not_ready": not_ready},
    })))
}
