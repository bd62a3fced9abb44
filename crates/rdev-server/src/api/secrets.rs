//! `PUT /secrets/{scope}/{name}`, `GET /secrets[?scope=]`, `DELETE /secrets/{scope}/{name}`:
//! the credential store over HTTP. Values are write-only: no response carries one, and
//! rejected bodies are answered without echoing what was sent. The callback signing secret
//! is not reachable here: it is not listed, and `PUT`/`DELETE` on its name answer 403
//! `reserved_secret_name`. Handlers only parse, call
//! [`SecretService`](crate::secrets::SecretService) and map errors (with
//! `super::error::secret_error`).

use axum::{
    extract::{rejection::JsonRejection, State},
    http::StatusCode,
    routing::{get, put},
    Json, Router,
};

use super::extract::{Path, Query};
use rdev_core::{SecretMeta, SecretName, SecretScope, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{error::secret_error, ApiError, AppState};

/// Who the audit log names for API calls.
const API_ACTOR: &str = "api";

/// The secrets routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/secrets", get(list))
        .route("/secrets/{scope}/{name}", put(set).delete(remove))
}

#[derive(Deserialize)]
struct PutBody {
    value: SecretString,
}

#[derive(Deserialize)]
struct ListQuery {
    scope: Option<String>,
}

fn parse(scope: &str, name: &str) -> Result<(SecretScope, SecretName), ApiError> {
    let invalid = |e: rdev_core::ValidationError| ApiError::from_code(StatusCode::BAD_REQUEST, &e);
    Ok((
        SecretScope::parse(scope).map_err(invalid)?,
        SecretName::parse(name).map_err(invalid)?,
    ))
}

fn meta_json(m: &SecretMeta) -> Value {
    json!({
        "scope": m.scope,
        "name": m.name,
        "version": m.version,
        "created_at": m.created_at,
        "last_used_at": m.last_used_at,
    })
}

async fn set(
    State(state): State<AppState>,
    Path((scope, name)): Path<(String, String)>,
    body: Result<Json<PutBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (scope, name) = parse(&scope, &name)?;
    // The rejection text may quote the body (and so the value): answer a fixed message.
    let Json(body) = body.map_err(|r| {
        let e = ApiError::from(r);
        ApiError::new(
            e.status,
            e.code,
            "the body must be JSON of the form {\"value\": \"<secret>\"}",
        )
    })?;
    let meta = state
        .secrets
        .set(&scope, &name, &body.value, API_ACTOR)
        .await
        .map_err(secret_error)?;
    let status = if meta.version == 1 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(meta_json(&meta))))
}

async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let scope = q
        .scope
        .as_deref()
        .map(SecretScope::parse)
        .transpose()
        .map_err(|e| ApiError::from_code(StatusCode::BAD_REQUEST, &e))?;
    let metas = state
        .secrets
        .list(scope.as_ref())
        .await
        .map_err(secret_error)?;
    let items: Vec<Value> = metas.iter().map(meta_json).collect();
    Ok(Json(json!({ "secrets": items })))
}

async fn remove(
    State(state): State<AppState>,
    Path((scope, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (scope, name) = parse(&scope, &name)?;
    let n = state
        .secrets
        .remove(&scope, &name, API_ACTOR)
        .await
        .map_err(secret_error)?;
    Ok(Json(
        json!({"scope": scope, "name": name, "deleted_versions": n}),
    ))
}
