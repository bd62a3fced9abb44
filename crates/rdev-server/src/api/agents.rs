//! `GET /agents`: the code agents of this node, the default first, with what each
//! supports, how it is isolated (`sandbox`: `bubblewrap`, `none`, `kubernetes_pod`,
//! `external`) and whether it can take a build (`state`: `ready`, `not_configured` or
//! `unavailable`, with `reason` and `fix` when it cannot). An enabled provider whose adapter
//! could not be set up is listed too, as `unavailable` with `capabilities: null`.

use axum::{extract::State, Json};
use rdev_core::Capabilities;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::AppState;
use crate::doctor::readiness::ProviderState;

/// Agent routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// The code agents of this node.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentList {
    agents: Vec<AgentInfo>,
}

/// One code agent.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentInfo {
    /// The provider id.
    provider: String,
    /// Whether builds that name no provider use it.
    default: bool,
    /// How its runs are isolated: `bubblewrap`, `none`, `kubernetes_pod` or `external`.
    sandbox: &'static str,
    /// What it supports; `null` when its adapter could not be set up.
    capabilities: Option<Capabilities>,
    /// `ready`, `not_configured` or `unavailable`.
    #[schema(pattern = "^(ready|not_configured|unavailable)$")]
    state: &'static str,
    /// Why it cannot take a build (absent when ready).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    reason: Option<String>,
    /// How to make it ready (absent when ready).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    fix: Option<String>,
}

/// The code agents of this node, the default first, each with its state and, when not
/// ready, the reason and the fix.
#[utoipa::path(get, path = "/agents", operation_id = "list_agents", tag = "catalog",
    responses((status = 200, description = "The agents.", body = AgentList)))]
async fn list(State(state): State<AppState>) -> Json<AgentList> {
    let default = state.registry.list().into_iter().next();
    let mut agents = Vec::new();
    for (id, readiness) in state.readiness.states(&state.config, &state.registry).await {
        let capabilities = state.registry.get(&id).ok().map(|a| a.capabilities());
        let (reason, fix) = match &readiness {
            ProviderState::NotConfigured { reason, fix }
            | ProviderState::Unavailable { reason, fix } => {
                (Some(reason.clone()), Some(fix.clone()))
            }
            ProviderState::Ready => (None, None),
        };
        agents.push(AgentInfo {
            default: default.as_ref().is_some_and(|d| d.as_str() == id),
            sandbox: state.config.agents.isolation(&id),
            capabilities,
            state: readiness.as_str(),
            reason,
            fix,
            provider: id,
        });
    }
    Json(AgentList { agents })
}
