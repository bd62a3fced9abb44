//! The web dashboard under `/ui`: server-rendered pages (maud) with small progressive
//! enhancement (htmx and its SSE extension, vendored in `assets/ui/` and embedded in the
//! binary). Pages read the store directly and check the viewer's [`Grant`] with the same
//! actions the API's routes have; everything that changes state is sent to the JSON API in
//! process ([`api_client`]), so the API's validation, permissions and error codes apply
//! unchanged. Live views use [`crate::live`]: one poll per task (and one for the list) per
//! node, however many pages are open.
//!
//! It must not hold domain logic of its own (validation, state changes) nor be part of the
//! OpenAPI document: it is a client of the API with a browser-friendly face.
//!
//! [`Grant`]: rdev_core::Grant

mod api_client;
mod build_live;
mod build_page;
mod build_view;
mod builds;
mod forms;
mod layout;
mod login;
mod new_build;
mod projects;
mod session;

use std::sync::Arc;

use axum::{
    extract::{Path, Request},
    http::{header, HeaderMap, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Redirect, Response},
    routing::get,
    Router,
};

use crate::services::Services;

pub use self::session::Sessions;

/// What the UI's handlers share: the node's services, the UI's sessions and the API router
/// that state-changing forms are sent to.
#[derive(Debug, Clone)]
pub struct Ui {
    services: Arc<Services>,
    sessions: Sessions,
    api: Router,
}

/// The UI's handler state.
pub type UiState = Arc<Ui>;

/// The `/ui` routes, to be merged next to the API (outside its bearer-token layer: the UI
/// authenticates by session cookie and hands the session's token to the API).
pub fn router(services: Arc<Services>) -> Router {
    let state = Arc::new(Ui {
        api: crate::api::router(Arc::clone(&services)),
        services,
        sessions: Sessions::default(),
    });
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/builds") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/builds") }))
        .route("/ui/assets/{file}", get(asset))
        .merge(login::router())
        .merge(builds::router())
        .merge(build_page::router())
        .merge(build_live::router())
        .merge(new_build::router())
        .merge(projects::router())
        .layer(axum::middleware::from_fn(same_origin))
        .with_state(state)
}

/// The embedded assets: (name, content type, bytes).
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "htmx-2.0.11.min.js",
        "text/javascript",
        include_bytes!("../../assets/ui/htmx-2.0.11.min.js"),
    ),
    (
        "htmx-ext-sse-2.2.4.min.js",
        "text/javascript",
        include_bytes!("../../assets/ui/htmx-ext-sse-2.2.4.min.js"),
    ),
    (
        "ui.css",
        "text/css",
        include_bytes!("../../assets/ui/ui.css"),
    ),
    (
        "LICENSES.txt",
        "text/plain; charset=utf-8",
        include_bytes!("../../assets/ui/LICENSES.txt"),
    ),
];

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, ..)| *name == file) {
        // Names carry their version, so they can be cached for good.
        Some((_, kind, bytes)) => (
            [
                (header::CONTENT_TYPE, *kind),
                (header::CACHE_CONTROL, "public, max-age=86400"),
            ],
            *bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

/// Refuses (403) a state-changing request whose `Origin` is missing or is not this server
/// (the `Host` it was sent to): a page on another site cannot submit the UI's forms, even
/// though the session cookie is `SameSite=Strict` already.
async fn same_origin(req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    if origin_matches(req.headers()) {
        next.run(req).await
    } else {
        tracing::info!(path = %req.uri().path(), "UI form refused: cross-origin or no Origin");
        (
            StatusCode::FORBIDDEN,
            "refused: this form must be sent from rdev's own pages (Origin header missing or foreign)",
        )
            .into_response()
    }
}

/// Whether the `Origin` header names the host the request was sent to.
fn origin_matches(headers: &HeaderMap) -> bool {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let (Some(origin), Some(host)) = (origin, host) else {
        return false;
    };
    let Ok(url) = url::Url::parse(origin) else {
        return false;
    };
    if !matches!(url.scheme(), "http" | "https") {
        return false;
    }
    let authority = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        _ => return false,
    };
    authority.eq_ignore_ascii_case(host)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        h
    }

    #[test]
    fn only_the_servers_own_origin_may_send_forms() {
        assert!(origin_matches(&headers(
            Some("http://127.0.0.1:8080"),
            "127.0.0.1:8080"
        )));
        assert!(origin_matches(&headers(
            Some("https://rdev.example.com"),
            "rdev.example.com"
        )));
        assert!(!origin_matches(&headers(None, "127.0.0.1:8080")));
        assert!(!origin_matches(&headers(Some("null"), "127.0.0.1:8080")));
        assert!(!origin_matches(&headers(
            Some("http://evil.example"),
            "127.0.0.1:8080"
        )));
        assert!(!origin_matches(&headers(
            Some("http://127.0.0.1:9999"),
            "127.0.0.1:8080"
        )));
    }
}
