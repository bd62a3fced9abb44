//! A fake Woodpecker server for tests: the same routes, bearer auth and JSON shapes as
//! woodpecker-ci/woodpecker v3.17.0 for what rdev uses (`GET /api/user`; `GET
//! /api/repos/lookup/{full_name}`, case-insensitive; `GET /api/repos/{repo_id}/pipelines`
//! with `page`/`perPage` and the `branch`/`event` filters, newest first and without
//! workflows; `GET /api/repos/{repo_id}/pipelines/{number}` with `workflows[].children[]`
//! steps). A test drives its state: add repositories and pipelines (of any branch and
//! event), script their statuses per request, hide a pipeline until it has been listed a
//! number of times, and inject error responses. Everything is
//! counted in requests, not time, so tests do not depend on timing.
//!
//! It must not be used by production code and never listens beyond 127.0.0.1.

use std::{
    collections::{BTreeMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
};

use axum::{
    extract::{Path, Query, State},
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// One request the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WoodpeckerRequest {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Whether the bearer token matched.
    pub authorized: bool,
}

#[derive(Debug)]
struct FakePipeline {
    id: i64,
    number: i64,
    commit: String,
    branch: String,
    event: String,
    status: String,
    deploy_to: String,
    /// Statuses applied one per `GET` of this pipeline, before answering.
    script: VecDeque<String>,
    /// The pipeline is invisible until its repository has been listed this many more times.
    hidden_for_lists: u32,
}

#[derive(Debug, Default)]
struct FakeState {
    token: String,
    repos: BTreeMap<i64, Vec<FakePipeline>>,
    /// Repository full names, lower-cased, and their ids.
    names: BTreeMap<String, (String, i64)>,
    next_id: i64,
    injected: VecDeque<(u16, String)>,
    requests: Vec<WoodpeckerRequest>,
}

/// A running fake Woodpecker on 127.0.0.1; stops when dropped.
#[derive(Debug)]
pub struct FakeWoodpecker {
    addr: SocketAddr,
    state: Arc<Mutex<FakeState>>,
    stop: CancellationToken,
}

impl FakeWoodpecker {
    /// Starts the fake on a free loopback port; requests must carry `Bearer <token>`.
    pub async fn start(token: &str) -> anyhow::Result<Self> {
        let state = Arc::new(Mutex::new(FakeState {
            token: token.to_owned(),
            next_id: 100,
            ..FakeState::default()
        }));
        let app = Router::new()
            .route("/api/user", get(current_user))
            .route("/api/repos/lookup/{*full_name}", get(lookup_repo))
            .route("/api/repos/{repo_id}/pipelines", get(list_pipelines))
            .route("/api/repos/{repo_id}/pipelines/{number}", get(get_pipeline))
            .fallback(not_found)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let shutdown = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
        });
        Ok(Self { addr, state, stop })
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a `pending` push pipeline for `commit` on `branch` and returns its number.
    pub fn add_pipeline(&self, repo_id: i64, commit: &str, branch: &str) -> i64 {
        self.add_hidden_pipeline(repo_id, commit, branch, 0)
    }

    /// Adds a pipeline that list requests for `repo_id` do not show until the repository
    /// has been listed `lists` times (a webhook that arrives late).
    pub fn add_hidden_pipeline(&self, repo_id: i64, commit: &str, branch: &str, lists: u32) -> i64 {
        let new = NewPipeline::push(commit, branch);
        add_locked(&mut self.lock(), repo_id, &new, lists)
    }

    /// Adds `pipelines` in order, all at once (no request sees only some of them), and
    /// returns their numbers.
    pub fn add_pipelines(&self, repo_id: i64, pipelines: &[NewPipeline<'_>]) -> Vec<i64> {
        let mut s = self.lock();
        pipelines
            .iter()
            .map(|p| add_locked(&mut s, repo_id, p, 0))
            .collect()
    }

    /// Creates an empty repository (its pipeline list is `[]` rather than 404).
    pub fn add_repo(&self, repo_id: i64) {
        self.lock().repos.entry(repo_id).or_default();
    }

    /// Creates an empty repository that the lookup finds by `full_name` (`owner/name`).
    pub fn add_named_repo(&self, repo_id: i64, full_name: &str) {
        let mut s = self.lock();
        s.repos.entry(repo_id).or_default();
        s.names
            .insert(full_name.to_lowercase(), (full_name.to_owned(), repo_id));
    }

    /// Sets a pipeline's status now.
    pub fn set_status(&self, repo_id: i64, number: i64, status: &str) {
        self.with_pipeline(repo_id, number, |p| p.status = status.to_owned());
    }

    /// Sets a pipeline's `deploy_to`.
    pub fn set_deploy_to(&self, repo_id: i64, number: i64, deploy_to: &str) {
        self.with_pipeline(repo_id, number, |p| p.deploy_to = deploy_to.to_owned());
    }

    /// Queues statuses: each `GET` of the pipeline applies the next one before answering,
    /// so `["pending", "running", "success"]` is seen in that order by three polls.
    pub fn script(&self, repo_id: i64, number: i64, statuses: &[&str]) {
        self.with_pipeline(repo_id, number, |p| {
            p.script.extend(statuses.iter().map(|s| (*s).to_owned()))
        });
    }

    /// The next `count` requests (any route) are answered with `status` and `body`.
    pub fn fail_next(&self, count: usize, status: u16, body: &str) {
        let mut s = self.lock();
        for _ in 0..count {
            s.injected.push_back((status, body.to_owned()));
        }
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<WoodpeckerRequest> {
        self.lock().requests.clone()
    }

    fn with_pipeline(&self, repo_id: i64, number: i64, f: impl FnOnce(&mut FakePipeline)) {
        let mut s = self.lock();
        let p = s
            .repos
            .get_mut(&repo_id)
            .and_then(|ps| ps.iter_mut().find(|p| p.number == number))
            .unwrap_or_else(|| panic!("fake woodpecker: no pipeline {repo_id}/{number}"));
        f(p);
    }
}

/// A pipeline for [`FakeWoodpecker::add_pipelines`].
#[derive(Debug, Clone, Copy)]
pub struct NewPipeline<'a> {
    pub commit: &'a str,
    pub branch: &'a str,
    /// The webhook event: `push`, `manual`, `tag`, `cron`, ...
    pub event: &'a str,
    /// The status it starts with (`pending` for a new one).
    pub status: &'a str,
}

impl<'a> NewPipeline<'a> {
    /// A `pending` pipeline of a push of `commit` to `branch`.
    pub fn push(commit: &'a str, branch: &'a str) -> Self {
        Self {
            commit,
            branch,
            event: "push",
            status: "pending",
        }
    }
}

/// Adds one pipeline with the repository's next number; returns the number.
fn add_locked(s: &mut FakeState, repo_id: i64, new: &NewPipeline<'_>, lists: u32) -> i64 {
    s.next_id += 1;
    let id = s.next_id;
    let pipelines = s.repos.entry(repo_id).or_default();
    let number = pipelines.iter().map(|p| p.number).max().unwrap_or(0) + 1;
    pipelines.push(FakePipeline {
        id,
        number,
        commit: new.commit.to_owned(),
        branch: new.branch.to_owned(),
        event: new.event.to_owned(),
        status: new.status.to_owned(),
        deploy_to: String::new(),
        script: VecDeque::new(),
        hidden_for_lists: lists,
    });
    number
}

impl Drop for FakeWoodpecker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

type Shared = Arc<Mutex<FakeState>>;

/// Records the request, then answers an injected error or a 401 when one applies.
fn gate(state: &Shared, method: &Method, uri: &Uri, headers: &HeaderMap) -> Option<Response> {
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    let expected = format!("Bearer {}", s.token);
    let authorized = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected);
    s.requests.push(WoodpeckerRequest {
        method: method.to_string(),
        uri: uri.to_string(),
        authorized,
    });
    if let Some((status, body)) = s.injected.pop_front() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Some((status, body).into_response());
    }
    if !authorized {
        // Woodpecker aborts with a bare status; gin writes the status text.
        return Some((StatusCode::UNAUTHORIZED, "Unauthorized").into_response());
    }
    None
}

/// `GET /api/user`: the user the token belongs to (Woodpecker's `model.User`, abridged).
async fn current_user(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = gate(&state, &method, &uri, &headers) {
        return r;
    }
    let user = json!({"id": 1, "forge_id": 1, "login": "rdev-bot", "admin": false});
    Json(user).into_response()
}

/// `GET /api/repos/lookup/{full_name}`: the repository by full name, ignoring case (as
/// Woodpecker's `GetRepoName`), as Woodpecker's `model.Repo` JSON (abridged); 404 when
/// there is none.
async fn lookup_repo(
    State(state): State<Shared>,
    Path(full_name): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = gate(&state, &method, &uri, &headers) {
        return r;
    }
    let s = state.lock().unwrap_or_else(|p| p.into_inner());
    // Gin's wildcard keeps the leading slash; Woodpecker trims it.
    let key = full_name.trim_start_matches('/').to_lowercase();
    let Some((name, id)) = s.names.get(&key) else {
        return (StatusCode::NOT_FOUND, "Not Found").into_response();
    };
    let (owner, repo) = name.rsplit_once('/').unwrap_or(("", name));
    Json(json!({
        "id": id,
        "forge_id": 1,
        "forge_remote_id": id.to_string(),
        "org_id": 1,
        "owner": owner,
        "name": repo,
        "full_name": name,
        "avatar_url": "",
        "forge_url": format!("https://forge.invalid/{name}"),
        "clone_url": format!("https://forge.invalid/{name}.git"),
        "clone_url_ssh": "",
        "default_branch": "main",
        "pr_enabled": true,
        "timeout": 60,
        "visibility": "private",
        "private": true,
        "trusted": {"network": false, "volumes": false, "security": false},
        "require_approval": "forks",
        "approval_allowed_users": [],
        "active": true,
        "allow_pr": true,
        "allow_deploy": false,
        "config_file": "",
        "cancel_previous_pipeline_events": [],
        "netrc_trusted": [],
    }))
    .into_response()
}

/// Woodpecker's webhook events (`model.WebhookEvent`); another value in the `event` filter
/// is a 400.
const EVENTS: &[&str] = &[
    "push",
    "pull_request",
    "pull_request_closed",
    "pull_request_metadata",
    "tag",
    "release",
    "deployment",
    "cron",
    "manual",
];

async fn list_pipelines(
    State(state): State<Shared>,
    Path(repo_id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = gate(&state, &method, &uri, &headers) {
        return r;
    }
    let Ok(repo_id) = repo_id.parse::<i64>() else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    // Same rules as Woodpecker's session.Pagination: page >= 1, 1 <= perPage <= 50.
    let page = q
        .get("page")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1);
    let per_page = q
        .get("perPage")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|p| (1..=50).contains(p))
        .unwrap_or(50);
    // Woodpecker's filters: `branch` exact, `event` a comma-separated list of known events.
    let branch = q.get("branch").filter(|b| !b.is_empty());
    let events: Option<Vec<&str>> = q
        .get("event")
        .filter(|e| !e.is_empty())
        .map(|e| e.split(',').collect());
    if events.iter().flatten().any(|e| !EVENTS.contains(e)) {
        return (StatusCode::BAD_REQUEST, "invalid webhook event").into_response();
    }
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    let Some(pipelines) = s.repos.get_mut(&repo_id) else {
        return (StatusCode::NOT_FOUND, "Not Found").into_response();
    };
    let mut visible: Vec<Value> = Vec::new();
    for p in pipelines.iter_mut() {
        if p.hidden_for_lists > 0 {
            p.hidden_for_lists -= 1;
            continue;
        }
        let wanted = branch.is_none_or(|b| *b == p.branch)
            && events
                .as_ref()
                .is_none_or(|es| es.contains(&p.event.as_str()));
        if wanted {
            visible.push(pipeline_json(p, false));
        }
    }
    visible.sort_by_key(|v| std::cmp::Reverse(v["number"].as_i64().unwrap_or(0)));
    let page: Vec<Value> = visible
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    Json(Value::Array(page)).into_response()
}

async fn get_pipeline(
    State(state): State<Shared>,
    Path((repo_id, number)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = gate(&state, &method, &uri, &headers) {
        return r;
    }
    let (Ok(repo_id), Ok(number)) = (repo_id.parse::<i64>(), number.parse::<i64>()) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    let found = s.repos.get_mut(&repo_id).and_then(|ps| {
        ps.iter_mut()
            .find(|p| p.number == number && p.hidden_for_lists == 0)
    });
    let Some(p) = found else {
        return (StatusCode::NOT_FOUND, "Not Found").into_response();
    };
    if let Some(next) = p.script.pop_front() {
        p.status = next;
    }
    Json(pipeline_json(p, true)).into_response()
}

async fn not_found(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = gate(&state, &method, &uri, &headers) {
        return r;
    }
    (StatusCode::NOT_FOUND, "404 page not found").into_response()
}

/// Step states for a pipeline status, for a workflow with steps clone, build, deploy.
fn step_states(status: &str) -> [(&'static str, i64); 3] {
    match status {
        "running" => [("success", 0), ("running", 0), ("pending", 0)],
        "success" => [("success", 0), ("success", 0), ("success", 0)],
        "failure" => [("success", 0), ("failure", 1), ("skipped", 0)],
        "killed" => [("success", 0), ("killed", 137), ("skipped", 0)],
        "error" => [("success", 0), ("error", 0), ("skipped", 0)],
        "canceled" | "declined" | "skipped" | "blocked" => {
            let s: &'static str = match status {
                "canceled" => "canceled",
                "declined" => "declined",
                "skipped" => "skipped",
                _ => "blocked",
            };
            [(s, 0), (s, 0), (s, 0)]
        }
        _ => [("pending", 0), ("pending", 0), ("pending", 0)],
    }
}

/// The pipeline as Woodpecker's `APIPipeline` JSON; `workflows` only when `full`.
fn pipeline_json(p: &FakePipeline, full: bool) -> Value {
    let created = 1_760_000_000 + p.number;
    let started = if p.status == "pending" {
        0
    } else {
        created + 1
    };
    let terminal = !matches!(
        p.status.as_str(),
        "pending" | "running" | "blocked" | "created"
    );
    let finished = if terminal { created + 60 } else { 0 };
    let mut v = json!({
        "id": p.id,
        "number": p.number,
        "author": "rdev",
        "parent": 0,
        "event": p.event,
        "event_reason": null,
        "status": p.status,
        "errors": null,
        "created": created,
        "updated": created,
        "started": started,
        "finished": finished,
        "deploy_to": p.deploy_to,
        "deploy_task": "",
        "commit": p.commit,
        "branch": p.branch,
        "rerun_count": 0,
        "ref": format!("refs/heads/{}", p.branch),
        "refspec": "",
        "author_avatar": "",
        "forge_url": format!("https://forge.invalid/commit/{}", p.commit),
        "reviewed_by": "",
        "reviewed": 0,
        "version": "3.17.0",
        "title": "",
        "message": "rdev build",
        "timestamp": created,
        "sender": "rdev",
        "author_email": "rdev@localhost",
    });
    if full {
        let workflow_id = p.id * 10;
        let steps: Vec<Value> = ["clone", "build", "deploy"]
            .iter()
            .zip(step_states(&p.status))
            .enumerate()
            .map(|(i, (name, (state, exit_code)))| {
                let mut step = json!({
                    "id": workflow_id + 1 + i as i64,
                    "uuid": format!("{:08}-step-{i}", p.id),
                    "pipeline_id": p.id,
                    "pid": 2 + i as i64,
                    "ppid": 1,
                    "name": name,
                    "state": state,
                    "exit_code": exit_code,
                    "type": if *name == "clone" { "clone" } else { "commands" },
                });
                if state == "error" {
                    step["error"] = json!("exec: command not found");
                }
                step
            })
            .collect();
        v["workflows"] = json!([{
            "id": workflow_id,
            "pipeline_id": p.id,
            "pid": 1,
            "name": "woodpecker",
            "state": p.status,
            "started": started,
            "finished": finished,
            "agent_id": 1,
            "platform": "linux/amd64",
            "environ": {},
            "children": steps,
        }]);
    }
    v
}
