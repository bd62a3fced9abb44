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
    Json,
};
use rdev_core::{SecretMeta, SecretName, SecretScope, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    error::{secret_error, ErrorBody},
    extract::{Path, Query},
    ApiError, AppState,
};
use crate::secrets::MAX_SECRET_BYTES;

/// Who the audit log names for API calls.
const API_ACTOR: &str = "api";

/// The secrets routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(set, remove))
}

/// The body of `PUT /secrets/{scope}/{name}`.
#[derive(Deserialize, ToSchema)]
struct PutBody {
    /// The value: 1 to 65536 bytes, no NUL (422 invalid_secret_value). Write-only.
    #[schema(schema_with = secret_value)]
    value: SecretString,
}

/// A secret value as the credential store takes it.
fn secret_value() -> utoipa::openapi::Object {
    let mut s = rdev_core::api_schema::string(
        "^[^\\u0000]*$",
        1,
        MAX_SECRET_BYTES,
        "The secret's value: 1 to 65536 bytes without a NUL (422 invalid_secret_value).",
    );
    s.write_only = Some(true);
    s
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only the secrets of this scope.
    #[param(value_type = Option<SecretScope>)]
    scope: Option<String>,
}

/// The secrets' metadata.
#[derive(Debug, Serialize, ToSchema)]
struct SecretList {
    secrets: Vec<SecretMeta>,
}

/// What deleting a secret did.
#[derive(Debug, Serialize, ToSchema)]
struct SecretDeleted {
    scope: SecretScope,
    name: SecretName,
    /// How many versions were deleted.
    deleted_versions: u64,
}

fn parse(scope: &str, name: &str) -> Result<(SecretScope, SecretName), ApiError> {
    let invalid = |e: rdev_core::ValidationError| ApiError::from_code(StatusCode::BAD_REQUEST, &e);
    Ok((
        SecretScope::parse(scope).map_err(invalid)?,
        SecretName::parse(name).map_err(invalid)?,
    ))
}

/// Stores a new version of a secret (write-only: no response carries a value).
#[utoipa::path(put, path = "/secrets/{scope}/{name}", operation_id = "set_secret", tag = "secrets",
    params(
        ("scope" = SecretScope, Path, description = "`global`, `gateway` or `project:<name>`."),
        ("name" = SecretName, Path, description = "The secret's name."),
    ),
    request_body = PutBody,
    responses(
        (status = 201, description = "The first version was stored.", body = SecretMeta),
        (status = 200, description = "A new version was stored.", body = SecretMeta),
        (status = 400, description = "codes: invalid_field, invalid_project_name", body = ErrorBody),
        (status = 403, description = "codes: reserved_secret_name", body = ErrorBody),
        (status = 404, description = "codes: not_found", body = ErrorBody),
        (status = 409, description = "codes: conflict", body = ErrorBody),
        (status = 422, description = "codes: invalid_secret_value", body = ErrorBody),
        (status = 503, description = "codes: master_key_mismatch, master_key_invalid, master_key_file_insecure, master_key_file_error", body = ErrorBody),
    ))]
async fn set(
    State(state): State<AppState>,
    Path((scope, name)): Path<(String, String)>,
    body: Result<Json<PutBody>, JsonRejection>,
) -> Result<(StatusCode, Json<SecretMeta>), ApiError> {
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
    Ok((status, Json(meta)))
}

/// Secret metadata, never values (the callback signing secrets are not listed).
#[utoipa::path(get, path = "/secrets", operation_id = "list_secrets", tag = "secrets",
    params(ListQuery),
    responses(
        (status = 200, description = "The secrets.", body = SecretList),
        (status = 400, description = "codes: invalid_field, invalid_project_name, invalid_query", body = ErrorBody),
        (status = 503, description = "codes: master_key_mismatch, master_key_invalid, master_key_file_insecure, master_key_file_error", body = ErrorBody),
    ))]
async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<SecretList>, ApiError> {
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
    Ok(Json(SecretList { secrets: metas }))
}

/// Deletes every version of a secret.
#[utoipa::path(delete, path = "/secrets/{scope}/{name}", operation_id = "delete_secret", tag = "secrets",
    params(
        ("scope" = SecretScope, Path, description = "`global`, `gateway` or `project:<name>`."),
        ("name" = SecretName, Path, description = "The secret's name."),
    ),
    responses(
        (status = 200, description = "Deleted.", body = SecretDeleted),
        (status = 400, description = "codes: invalid_field, invalid_project_name", body = ErrorBody),
        (status = 403, description = "codes: reserved_secret_name", body = ErrorBody),
        (status = 404, description = "codes: secret_not_found, not_found", body = ErrorBody),
        (status = 409, description = "codes: conflict", body = ErrorBody),
        (status = 503, description = "codes: master_key_mismatch, master_key_invalid, master_key_file_insecure, master_key_file_error", body = ErrorBody),
    ))]
async fn remove(
    State(state): State<AppState>,
    Path((scope, name)): Path<(String, String)>,
) -> Result<Json<SecretDeleted>, ApiError> {
    let (scope, name) = parse(&scope, &name)?;
    let n = state
        .secrets
        .remove(&scope, &name, API_ACTOR)
        .await
        .map_err(secret_error)?;
    Ok(Json(SecretDeleted {
        scope,
        name,
        deleted_versions: n,
    }))
}
