//! Who may call the API and for what. [`authenticate`] wraps every request: `/healthz` and
//! `/readyz` stay open for orchestrators' probes, `/openapi.json` and
//! `/schemas/callback.json` for whoever integrates (a client generator, a callback
//! receiver's validator); anything else needs a bearer token (the
//! configured `RDEV_API_TOKEN`, an admin, or one made with `rdev token create`), answered
//! 401 `unauthorized` without one, unless the API has no credential at all (see
//! [`TokenService`](crate::tokens::TokenService)). The [`Grant`] it finds goes into the
//! request's extensions. [`authorize`] runs after routing and answers 403 `forbidden` when
//! the grant's scope does not allow the route, or the route is about a project (by name,
//! or a task's project) the token is not limited to.
//!
//! [`RULES`] names the action of every route a non-admin token may call; a route missing
//! from it is admin-only, so a new route is closed until someone decides otherwise.
//! Tokens are never logged.

use axum::{
    extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State},
    http::{header::AUTHORIZATION, HeaderMap, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use rdev_core::{Action, Grant, ProjectName, Resource, TaskId};

use super::{ApiError, AppState};
use crate::tokens::AuthError;

/// Paths that never need a token (the OpenAPI document says `security: []` for them).
pub(super) const OPEN_PATHS: [&str; 4] = [
    "/healthz",
    "/readyz",
    "/openapi.json",
    "/schemas/callback.json",
];

/// Which project a route is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// None: catalog routes.
    NoProject,
    /// Every project's data at once.
    AllProjects,
    /// The project named by the `{name}` path parameter.
    ProjectParam,
    /// The project of the task in the `{id}` path parameter.
    TaskParam,
    /// The `?project=` of a task listing; without it the listing is narrowed to the
    /// token's projects by the handler (`tasks::list`).
    TaskListing,
}

/// `(method, route, action, target)` for every route a non-admin token may call. `GET`
/// covers `HEAD`. Everything else (creating, changing and deleting projects, rotating a
/// webhook secret, setting and deleting secrets) is [`Action::Admin`].
#[rustfmt::skip]
pub const RULES: &[(&str, &str, Action, Target)] = &[
    ("GET",  "/agents",                Action::Catalog,   Target::NoProject),
    ("GET",  "/templates",             Action::Catalog,   Target::NoProject),
    ("GET",  "/templates/{name}",      Action::Catalog,   Target::NoProject),
    ("GET",  "/metrics",               Action::Read,      Target::AllProjects),
    ("GET",  "/secrets",               Action::Read,      Target::AllProjects),
    ("GET",  "/projects",              Action::Read,      Target::AllProjects),
    ("GET",  "/projects/{name}",       Action::Read,      Target::ProjectParam),
    ("POST", "/project/{name}/build",  Action::Build,     Target::ProjectParam),
    ("GET",  "/tasks",                 Action::ReadTasks, Target::TaskListing),
    ("GET",  "/tasks/{id}",            Action::ReadTasks, Target::TaskParam),
    ("GET",  "/tasks/{id}/events",     Action::ReadTasks, Target::TaskParam),
    ("POST", "/tasks/{id}/cancel",     Action::Cancel,    Target::TaskParam),
    ("POST", "/tasks/{id}/retry",      Action::Build,     Target::TaskParam),
];

/// The action and target of `method route` ([`Action::Admin`] for routes not in [`RULES`]).
pub fn rule(method: &Method, route: &str) -> (Action, Target) {
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    RULES
        .iter()
        .find(|(m, r, ..)| *m == method && *r == route)
        .map_or((Action::Admin, Target::NoProject), |&(_, _, a, t)| (a, t))
}

/// The bearer token of a request, if it has one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
}

/// Finds the request's [`Grant`] (401 without a valid token) and stores it in the request.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    if OPEN_PATHS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    match state.tokens.authenticate(bearer(req.headers())).await {
        Ok(grant) => {
            req.extensions_mut().insert(grant);
            next.run(req).await
        }
        Err(e @ AuthError::Unauthorized) => {
            let mut resp = ApiError::from_code(StatusCode::UNAUTHORIZED, &e).into_response();
            resp.headers_mut()
                .insert("www-authenticate", "Bearer".parse().expect("static header"));
            resp
        }
        Err(AuthError::Store(e)) => ApiError::from(e).into_response(),
    }
}

/// Answers 403 `forbidden` unless the request's grant allows the matched route on its
/// project. Runs after routing (a route layer), so the route and its parameters are known.
pub async fn authorize(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if OPEN_PATHS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let Some(grant) = parts.extensions.get::<Grant>().cloned() else {
        // `authenticate` always runs first; without a grant, fail closed.
        return ApiError::internal("a request reached authorization without a grant")
            .into_response();
    };
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let (action, target) = rule(&parts.method, &route);
    let param = |key: &str, params: &Option<RawPathParams>| {
        params
            .as_ref()
            .and_then(|p| p.iter().find(|(k, _)| *k == key).map(|(_, v)| v.to_owned()))
    };
    let params = RawPathParams::from_request_parts(&mut parts, &state)
        .await
        .ok();
    let project = match target {
        Target::NoProject | Target::AllProjects => None,
        Target::ProjectParam => param("name", &params),
        Target::TaskListing => query_param(parts.uri.query(), "project"),
        Target::TaskParam => match task_project(&state, param("id", &params)).await {
            Ok(p) => p,
            Err(e) => return e.into_response(),
        },
    };
    // A name that does not parse, or a task that does not exist, names no project: the
    // scope is still checked, and the handler answers 4xx without touching any data.
    let project = project.and_then(|p| ProjectName::parse(&p).ok());
    let resource = match (&project, target) {
        (Some(p), _) => Resource::Project(p),
        (None, Target::AllProjects) => Resource::AllProjects,
        (None, _) => Resource::NoProject,
    };
    if let Err(e) = grant.permits(action, resource) {
        tracing::info!(token = %grant.token, method = %parts.method, route, error = %e, "request forbidden");
        return ApiError::from_code(StatusCode::FORBIDDEN, &e).into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

/// The project of the task `id`, or `None` when `id` is not a task id or no such task
/// exists (the handler answers that).
async fn task_project(state: &AppState, id: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(id) = id.and_then(|id| id.parse::<TaskId>().ok()) else {
        return Ok(None);
    };
    match state.store.get(id).await {
        Ok(task) => Ok(Some(task.project.to_string())),
        Err(rdev_core::StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The first value of `key` in a query string.
fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_not_in_the_table_are_admin_only() {
        assert_eq!(
            rule(&Method::POST, "/project/{name}/build"),
            (Action::Build, Target::ProjectParam)
        );
        assert_eq!(
            rule(&Method::HEAD, "/tasks"),
            (Action::ReadTasks, Target::TaskListing)
        );
        for (method, route) in [
            (Method::POST, "/projects"),
            (Method::DELETE, "/projects/{name}"),
            (Method::PUT, "/secrets/{scope}/{name}"),
            (Method::POST, "/projects/{name}/webhook-secret"),
            (Method::GET, "/a-route-nobody-classified"),
        ] {
            assert_eq!(rule(&method, route).0, Action::Admin, "{method} {route}");
        }
    }

    /// Every documented route is either in [`RULES`] or deliberately admin-only here, so
    /// adding a route forces a decision about who may call it.
    #[test]
    fn every_documented_route_is_classified() {
        const ADMIN_ONLY: &[(&str, &str)] = &[
            ("POST", "/projects"),
            ("PATCH", "/projects/{name}"),
            ("DELETE", "/projects/{name}"),
            ("POST", "/projects/{name}/webhook-secret"),
            ("PUT", "/secrets/{scope}/{name}"),
            ("DELETE", "/secrets/{scope}/{name}"),
        ];
        let doc = super::super::openapi::document();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for method in ops.as_object().unwrap().keys() {
                if method == "parameters" || OPEN_PATHS.contains(&path.as_str()) {
                    continue;
                }
                let upper = method.to_uppercase();
                let in_rules = RULES.iter().any(|(m, r, ..)| *m == upper && r == path);
                let admin = ADMIN_ONLY.contains(&(upper.as_str(), path.as_str()));
                assert!(
                    in_rules != admin,
                    "{upper} {path}: list it in RULES or in ADMIN_ONLY (exactly one)"
                );
            }
        }
    }

    #[test]
    fn bearer_and_query_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(AUTHORIZATION, "Bearer rdev_abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("rdev_abc"));
        h.insert(AUTHORIZATION, "Basic eDp5".parse().unwrap());
        assert_eq!(bearer(&h), None);
        assert_eq!(
            query_param(Some("status=queued&project=acme"), "project").as_deref(),
            Some("acme")
        );
        assert_eq!(query_param(Some("status=queued"), "project"), None);
        assert_eq!(query_param(None, "project"), None);
    }
}
