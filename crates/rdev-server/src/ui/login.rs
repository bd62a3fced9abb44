//! The login form (`/ui/login`) and logout: a valid API token becomes a session
//! ([`Sessions`](super::session::Sessions)) whose id is set as an `HttpOnly`, `SameSite=Strict` cookie limited to
//! `/ui` (`Secure` when the browser came over HTTPS); logout ends the session on the server
//! and clears the cookie.
//!
//! It must not log or render the token.

use axum::{
    extract::State,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
    Form, Router,
};
use maud::html;
use rdev_core::SecretString;
use serde::Deserialize;

use super::{
    layout,
    session::{cookie_value, store_down, COOKIE, LIFETIME},
    UiState,
};
use crate::tokens::AuthError;

/// Login and logout.
pub fn router() -> Router<UiState> {
    Router::new()
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
}

async fn login_page() -> Response {
    login_form(None, StatusCode::OK)
}

fn login_form(error: Option<&str>, status: StatusCode) -> Response {
    let body = html! {
        h1 { "Log in to rdev" }
        p { "Paste an API token: the server's " code { "RDEV_API_TOKEN" } " or one made with "
            code { "rdev token create" } ". What you can see and do follows its scope." }
        form.stack.card method="post" action="/ui/login" {
            div.field {
                label for="token" { "API token" }
                input #token type="password" name="token" autocomplete="current-password" required
                    aria-describedby=[error.map(|_| "token-error")];
                @if let Some(e) = error {
                    span #token-error .field-error { (e) }
                }
            }
            div { button type="submit" { "Log in" } }
        }
    };
    (status, layout::page("Log in", None, None, body)).into_response()
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(
    State(ui): State<UiState>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let token = f.token.trim();
    if token.is_empty() {
        return login_form(Some("Enter a token."), StatusCode::UNPROCESSABLE_ENTITY);
    }
    match ui.services.tokens.authenticate(Some(token)).await {
        Ok(grant) => {
            tracing::info!(token = %grant.token, "UI login");
            let id = ui.sessions.start(SecretString::new(token));
            let secure = if is_https(&headers) { "; Secure" } else { "" };
            let cookie = format!(
                "{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
                LIFETIME.as_secs()
            );
            let mut resp = Redirect::to("/ui/builds").into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
        Err(AuthError::Unauthorized) => login_form(
            Some("This token is not valid here (unknown or revoked)."),
            StatusCode::UNAUTHORIZED,
        ),
        Err(AuthError::Store(e)) => store_down(&e),
    }
}

/// Whether the browser reached us over HTTPS (directly or through a proxy that says so).
fn is_https(headers: &HeaderMap) -> bool {
    let header_is = |name: &str, prefix: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(prefix))
    };
    header_is("origin", "https://") || header_is("x-forwarded-proto", "https")
}

async fn logout(State(ui): State<UiState>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie_value(&headers) {
        ui.sessions.end(&id);
    }
    let mut resp = Redirect::to("/ui/login").into_response();
    let clear = format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(v) = HeaderValue::from_str(&clear) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}
