//! [`ApiError`]: the one place domain errors become HTTP responses. Every error body is
//! `{"error":{"code","message"}}` with a stable code; messages never carry secrets. Every
//! mapping of a [`StoreError`] (bare or inside a service's error) to a status lives here:
//! handlers use `?` or a named helper below, never a match of their own.

use axum::{
    extract::rejection::{JsonRejection, PathRejection, QueryRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use rdev_core::{ErrorCode, StoreError, TaskId};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    git::GitError,
    project_service::{InitError, ProjectError},
    secrets::SecretError,
};

/// The body of every error response: `{"error":{"code","message"}}`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong: a stable machine code (listed in docs/api.md) and a message for people.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable `snake_case` code clients match on.
    pub code: &'static str,
    /// What went wrong and, where there is one, how to fix it; never a secret.
    pub message: String,
}

/// An error answered to an API client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    /// An error with an explicit status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// A domain error with its own code, answered with `status`.
    pub fn from_code<E: ErrorCode + std::fmt::Display>(status: StatusCode, err: &E) -> Self {
        Self::new(status, err.code(), err.to_string())
    }

    /// 404 with code `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 500 with code `internal`; the detail is logged, not answered.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let (status, code) = match &r {
            JsonRejection::MissingJsonContentType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            JsonRejection::BytesRejection(_) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            JsonRejection::JsonSyntaxError(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            _ => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        };
        Self::new(status, code, r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_path", r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_query", r.body_text())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        use StoreError as E;
        let status = match &e {
            E::NotFound { .. } => StatusCode::NOT_FOUND,
            E::Conflict(_) | E::LeaseLost { .. } | E::InvalidTransition(_) => StatusCode::CONFLICT,
            E::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            E::Corrupt(_) => return ApiError::internal(&e),
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<ProjectError> for ApiError {
    fn from(e: ProjectError) -> Self {
        use ProjectError as E;
        let e = match e {
            E::Store(store) => return store.into(),
            e => e,
        };
        let status = match &e {
            E::Invalid(_) | E::Template(_) => StatusCode::UNPROCESSABLE_ENTITY,
            E::Repository(GitError::RepositoryExists(_)) => StatusCode::CONFLICT,
            // A secret in the variables is the request's fault, not the remote's.
            E::Initialise(InitError::SecretInCommit(_)) => StatusCode::UNPROCESSABLE_ENTITY,
            E::Initialise(_) => StatusCode::BAD_GATEWAY,
            E::WebhookSecret(_) => StatusCode::SERVICE_UNAVAILABLE,
            E::Store(_) | E::Repository(_) | E::RepositoryPath(_) => return ApiError::internal(&e),
        };
        ApiError::from_code(status, &e)
    }
}

impl From<crate::sessions::ResumeError> for ApiError {
    fn from(e: crate::sessions::ResumeError) -> Self {
        match e {
            crate::sessions::ResumeError::Store(store) => store.into(),
            crate::sessions::ResumeError::Session(e) => {
                ApiError::from_code(StatusCode::UNPROCESSABLE_ENTITY, &e)
            }
        }
    }
}

/// A credential store error of the `/secrets` routes; messages never contain values.
pub(super) fn secret_error(e: SecretError) -> ApiError {
    let status = match &e {
        // Well-formed, but no client may touch it: only `POST /projects/{name}/webhook-secret`.
        SecretError::Invalid(rdev_core::ValidationError::ReservedSecretName { .. }) => {
            StatusCode::FORBIDDEN
        }
        SecretError::Invalid(_) | SecretError::InvalidValue(_) => StatusCode::UNPROCESSABLE_ENTITY,
        SecretError::NotFound { .. } | SecretError::Store(StoreError::NotFound { .. }) => {
            StatusCode::NOT_FOUND
        }
        SecretError::Store(StoreError::Conflict(_)) => StatusCode::CONFLICT,
        SecretError::MasterKeyMismatch { .. }
        | SecretError::MasterKeyInvalid { .. }
        | SecretError::MasterKeyFileInsecure { .. }
        | SecretError::MasterKeyFile { .. }
        | SecretError::Store(StoreError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
        _ => {
            tracing::error!(code = e.code(), error = %e, "secret operation failed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    ApiError::from_code(status, &e)
}

/// A failed `POST /tasks/{id}/retry`: 409 `not_retryable` when the task's status does not
/// allow it, otherwise the store error as usual.
pub(super) fn retry_error(id: TaskId, e: StoreError) -> ApiError {
    match e {
        StoreError::InvalidTransition(t) => ApiError::new(
            StatusCode::CONFLICT,
            "not_retryable",
            format!(
                "only a failed or cancelled task can be retried; task {id} is {}",
                t.from
            ),
        ),
        e => e.into(),
    }
}
