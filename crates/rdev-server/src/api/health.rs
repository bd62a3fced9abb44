//! Liveness and readiness: `/healthz` says the process answers; `/readyz` that its
//! database does and at least one agent provider can take a build (`providers` lists the
//! ready ones and why the others are not), 503 otherwise. Neither calls anything beyond the
//! database (provider readiness needs no network call).

use std::collections::BTreeMap;

use axum::{extract::State, http::StatusCode, Json};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{error::ErrorBody, ApiError, AppState};
use crate::doctor::readiness::ProviderState;

/// `GET /healthz`, `GET /readyz`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// The process answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(pattern = "^ok$")]
    status: &'static str,
}

/// The node can take builds.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// Always `ready`.
    #[schema(pattern = "^ready$")]
    status: &'static str,
    /// The database backend: `sqlite` or `postgres`.
    database: &'static str,
    providers: ProviderReadiness,
}

/// Which agent providers can take a build, and why the others cannot.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderReadiness {
    ready: Vec<String>,
    not_ready: BTreeMap<String, ProviderState>,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "health",
    responses((status = 200, description = "The process answers.", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: the database answers and at least one agent provider can take a build.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "health",
    responses(
        (status = 200, description = "Ready.", body = Readiness),
        (status = 503, description = "codes: database_unavailable, no_provider_ready", body = ErrorBody),
    ))]
async fn readyz(State(state): State<AppState>) -> Result<Json<Readiness>, ApiError> {
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
    let ready: Vec<String> = states
        .iter()
        .filter(|(_, s)| s.is_ready())
        .map(|(id, _)| id.clone())
        .collect();
    let not_ready: BTreeMap<String, ProviderState> = states
        .iter()
        .filter(|(_, s)| !s.is_ready())
        .map(|(id, s)| (id.clone(), s.clone()))
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
    Ok(Json(Readiness {
        status: "ready",
        database: state.db.backend().as_str(),
        providers: ProviderReadiness { ready, not_ready },
    }))
}
