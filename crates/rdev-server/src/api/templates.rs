//! `GET /templates` and `GET /templates/{name}`: what the built-in and configured templates
//! are and which variables they take.

use axum::{extract::State, http::StatusCode, Json};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{error::ErrorBody, extract::Path, ApiError, AppState};
use crate::templates::TemplateInfo;

/// Template routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
}

/// The templates this server has.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateList {
    templates: Vec<TemplateInfo>,
}

/// Project templates: the built-in ones and those configured.
#[utoipa::path(get, path = "/templates", operation_id = "list_templates", tag = "catalog",
    responses((status = 200, description = "The templates.", body = TemplateList)))]
async fn list(State(state): State<AppState>) -> Json<TemplateList> {
    let templates = state.templates.list().map(|t| t.info()).collect();
    Json(TemplateList { templates })
}

/// One template and its variables.
#[utoipa::path(get, path = "/templates/{name}", operation_id = "show_template", tag = "catalog",
    params(("name" = String, Path, description = "The template's name.")),
    responses(
        (status = 200, description = "The template.", body = TemplateInfo),
        (status = 404, description = "codes: unknown_template", body = ErrorBody),
    ))]
async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<TemplateInfo>, ApiError> {
    let t = state
        .templates
        .get(&name)
        .map_err(|e| ApiError::from_code(StatusCode::NOT_FOUND, &e))?;
    Ok(Json(t.info()))
}
