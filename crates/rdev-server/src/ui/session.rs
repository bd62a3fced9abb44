//! Who is looking at the UI. A person logs in by pasting an API token (the configured
//! `RDEV_API_TOKEN` or one made with `rdev token create`); the server keeps it in memory
//! under a random session id and sets that id as an `HttpOnly`, `SameSite=Strict` cookie
//! scoped to `/ui`. Every request turns the session's token back into a [`Grant`] through
//! [`TokenService::authenticate`](crate::tokens::TokenService::authenticate), so revoking
//! the token ends its sessions at once. With no credential configured at all (an open API
//! on loopback) no login is needed, as for the API.
//!
//! Sessions live in this node's memory: a restart logs everyone out, and several nodes
//! behind one address need session affinity. The login form itself is `login`. It must not
//! log or render a token.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::FromRequestParts,
    http::{header, request::Parts, HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
};
use base64::Engine;
use rand::RngCore;
use rdev_core::{Action, Grant, ProjectName, Resource, SecretString};

use super::UiState;
use crate::tokens::AuthError;

/// The session cookie's name.
pub const COOKIE: &str = "rdev_session";
/// How long a session lasts after logging in.
pub(super) const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; the oldest go first beyond that.
const MAX_SESSIONS: usize = 10_000;

#[derive(Debug)]
struct Session {
    token: SecretString,
    expires: Instant,
}

/// This node's UI sessions, by id.
#[derive(Debug, Clone, Default)]
pub struct Sessions(Arc<Mutex<HashMap<String, Session>>>);

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a session for `token`; returns its id (32 random bytes, base64url).
    pub(super) fn start(&self, token: SecretString) -> String {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            id.clone(),
            Session {
                token,
                expires: now + LIFETIME,
            },
        );
        id
    }

    /// The token of a live session.
    fn token(&self, id: &str) -> Option<SecretString> {
        let mut map = self.lock();
        match map.get(id) {
            Some(s) if s.expires > Instant::now() => Some(s.token.clone()),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    pub(super) fn end(&self, id: &str) {
        self.lock().remove(id);
    }
}

/// The person behind a request: their grant, and the token to act with on the API.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub grant: Grant,
    /// `None` on an open API (no credential configured).
    token: Option<SecretString>,
    /// Whether a login session exists (a logout button makes sense).
    pub logged_in: bool,
}

impl Viewer {
    /// Whether the grant allows `action` on `project` (or on no project in particular).
    pub fn can(&self, action: Action, project: Option<&ProjectName>) -> bool {
        let resource = project.map_or(Resource::NoProject, Resource::Project);
        self.grant.permits(action, resource).is_ok()
    }

    /// Whether the grant may read this project's tasks.
    pub fn sees(&self, project: &ProjectName) -> bool {
        self.can(Action::ReadTasks, Some(project))
    }

    /// The bearer token the API is called with.
    pub fn token(&self) -> Option<&SecretString> {
        self.token.as_ref()
    }
}

pub(super) fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// Sends the browser to the login page (or answers 401 to a fragment or stream request).
#[derive(Debug)]
pub struct LoginRequired;

impl IntoResponse for LoginRequired {
    fn into_response(self) -> Response {
        Redirect::to("/ui/login").into_response()
    }
}

impl FromRequestParts<UiState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, ui: &UiState) -> Result<Self, Self::Rejection> {
        let tokens = &ui.services.tokens;
        if let Some(id) = cookie_value(&parts.headers) {
            if let Some(token) = ui.sessions.token(&id) {
                match tokens.authenticate(Some(token.expose())).await {
                    Ok(grant) => {
                        return Ok(Viewer {
                            grant,
                            token: Some(token),
                            logged_in: true,
                        })
                    }
                    Err(AuthError::Unauthorized) => ui.sessions.end(&id),
                    Err(AuthError::Store(e)) => return Err(store_down(&e)),
                }
            }
        }
        match tokens.authenticate(None).await {
            Ok(grant) => Ok(Viewer {
                grant,
                token: None,
                logged_in: false,
            }),
            Err(AuthError::Unauthorized) => Err(LoginRequired.into_response()),
            Err(AuthError::Store(e)) => Err(store_down(&e)),
        }
    }
}

pub(super) fn store_down(e: &dyn std::fmt::Display) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the database is unavailable: {e}"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_hold_tokens_until_ended() {
        let s = Sessions::default();
        let id = s.start(SecretString::new("rdev_abc"));
        assert_eq!(id.len(), 43, "32 bytes in base64url");
        assert_eq!(s.token(&id).unwrap().expose(), "rdev_abc");
        assert!(s.token("other").is_none());
        s.end(&id);
        assert!(s.token(&id).is_none());
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        use axum::http::HeaderValue;
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; rdev_session=xyz; b=2"),
        );
        assert_eq!(cookie_value(&h).as_deref(), Some("xyz"));
        h.insert(header::COOKIE, HeaderValue::from_static("a=1"));
        assert_eq!(cookie_value(&h), None);
    }
}
