//! `GET /agents`: the code agents of this node, the default first, with what each
//! supports, how it is isolated (`sandbox`: `bubblewrap`, `none`, `kubernetes_pod`,
//! `external`) and whether it can take a build (`state`: `ready`, `not_configured` or
//! `unavailable`, with `reason` and `fix` when it cannot). An enabled provider whose adapter
//! could not be set up is listed too, as `unavailable` with `capabilities: null`.

use axum::{extract::State, routing::get, Json, Router};
use serde_json::{json, Value};

use super::AppState;
use crate::doctor::readiness::ProviderState;

/// Agent routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/agents", get(list))
}

async fn list(State(state): State<AppState>) -> Json<Value> {
    let default = state.registry.list().into_iter().next();
    let mut agents = Vec::new();
    for (id, readiness) in state.readiness.states(&state.config, &state.registry).await {
        let capabilities = state.registry.get(&id).ok().map(|a| a.capabilities());
        let mut agent = json!({
            "provider": id,
            "default": default.as_ref().is_some_and(|d| d.as_str() == id),
            "sandbox": state.config.agents.isolation(&id),
            "capabilities": capabilities,
            "state": readiness.as_str(),
        });
        if let ProviderState::NotConfigured { reason, fix }
        | ProviderState::Unavailable { reason, fix } = &readiness
        {
            agent["reason"] = json!(reason);
            agent["fix"] = json!(fix);
        }
        agents.push(agent);
    }
    Json(json!({"agents": agents}))
}
