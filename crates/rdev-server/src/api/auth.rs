//! Bearer-token authentication for the API (`RDEV_API_TOKEN`). Health and readiness stay
//! open so orchestrators can probe them. Tokens are compared in constant time and never
//! logged. With no token configured the API is open, and `serve` warns at start.

use axum::{
    extract::{Request, State},
    http::{header::AUTHORIZATION, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{ApiError, AppState};

/// Paths that never need a token.
const OPEN_PATHS: [&str; 2] = ["/healthz", "/readyz"];

/// Rejects requests without the configured bearer token with 401.
pub async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(expected) = state.config.api_token.as_ref() else {
        return next.run(req).await;
    };
    if OPEN_PATHS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    match given {
        Some(token) if constant_time_eq(token.as_bytes(), expected.expose().as_bytes()) => {
            next.run(req).await
        }
        _ => {
            let mut resp = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid bearer token is required (Authorization: Bearer <RDEV_API_TOKEN>)",
            )
            .into_response();
            resp.headers_mut()
                .insert("www-authenticate", "Bearer".parse().expect("static header"));
            resp
        }
    }
}

/// Byte comparison whose time does not depend on where the inputs differ (`subtle` keeps
/// the compiler from turning it back into an early exit).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn compares_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
