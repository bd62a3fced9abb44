//! The UI's forms act through the JSON API, in process: a request is built with the
//! viewer's token as its bearer and handed to the API router (`tower::ServiceExt::oneshot`,
//! no socket). So a form can do exactly what the same token could do with curl, with the
//! same validation and the same error codes, and the UI holds no second copy of any rule.
//!
//! It must not decide anything about the request itself; it only carries it.

use axum::{
    body::Body,
    http::{header, Method, Request, StatusCode},
};
use serde::Deserialize;
use serde_json::Value;
use tower::ServiceExt;

use super::{session::Viewer, UiState};

/// The largest API answer the UI reads.
const MAX_ANSWER: usize = 4 * 1024 * 1024;

/// An API error as the API answers it (`{"error":{"code","message"}}`).
#[derive(Debug, Clone, Deserialize)]
pub struct ApiFailure {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ApiFailure,
}

/// Sends `method path` with `body` (JSON) to the API as `viewer`. Returns the status and
/// the JSON answer on success, the API's error otherwise.
pub async fn call(
    ui: &UiState,
    viewer: &Viewer,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<(StatusCode, Value), ApiFailure> {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(token) = viewer.token() {
        req = req.header(header::AUTHORIZATION, format!("Bearer {}", token.expose()));
    }
    let req = match body {
        Some(b) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .map_err(|e| internal(e.to_string()))?;
    let resp = ui
        .api
        .clone()
        .oneshot(req)
        .await
        .map_err(|e| internal(e.to_string()))?;
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), MAX_ANSWER)
        .await
        .map_err(|e| internal(e.to_string()))?;
    if status.is_success() {
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        return Ok((status, value));
    }
    match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(b) => Err(b.error),
        Err(_) => Err(internal(format!(
            "the API answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        ))),
    }
}

fn internal(message: String) -> ApiFailure {
    ApiFailure {
        code: "internal".into(),
        message,
    }
}
