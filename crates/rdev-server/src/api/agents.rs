//! `GET /agents`: the code agents this node can run, the default first, with what each
//! supports and how it is isolated (`sandbox`: `bubblewrap`, `none`, `kubernetes_pod`,
//! `external`).

use axum::{extract::State, routing::get, Json, Router};
use serde_json::{json, Value};

use super::AppState;

/// Agent routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/agents", get(list))
}

async fn list(State(state): State<AppState>) -> Json<Value> {
    let ids = state.registry.list();
    let agents: Vec<Value> = ids
        .iter()
        .enumerate()
        .filter_map(|(i, id)| {
            let agent = state.registry.get(id.as_str()).ok()?;
            Some(json!({
                "provider": id,
                "default": i == 0,
                "sandbox": state.config.agents.isolation(id.as_str()),
                "capabilities": agent.capabilities(),
            }))
        })
        .collect();
    Json(json!({"agents": agents}))
}
