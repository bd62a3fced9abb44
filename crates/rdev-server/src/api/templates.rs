//! `GET /templates` and `GET /templates/{name}`: what the built-in and configured templates
//! are and which variables they take.

use axum::{extract::State, http::StatusCode, routing::get, Json, Router};

use super::extract::Path;
use serde_json::{json, Value};

use super::{ApiError, AppState};

/// Template routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/templates", get(list))
        .route("/templates/{name}", get(show))
}

async fn list(State(state): State<AppState>) -> Json<Value> {
    let templates: Vec<_> = state.templates.list().map(|t| t.info()).collect();
    Json(json!({"templates": templates}))
}

async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let t = state
        .templates
        .get(&name)
        .map_err(|e| ApiError::from_code(StatusCode::NOT_FOUND, &e))?;
    Ok(Json(json!(t.info())))
}
