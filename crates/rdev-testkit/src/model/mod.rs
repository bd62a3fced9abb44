//! The scripted model server: an axum server speaking enough of the Anthropic Messages API
//! (`POST /v1/messages` JSON and SSE, `POST /v1/messages/count_tokens`) that the real
//! `claude` CLI and `opencode serve` run multi-turn tool loops against it offline. What it
//! answers is read from `@@` directives in the prompt (see `docs/scripted-model.md`). It
//! records every request for assertions. It must never reach the network beyond its own
//! loopback listener, and it keeps no per-session state.

mod conversation;
mod reply;
mod script;

use std::{
    convert::Infallible,
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use anyhow::Context;
use axum::{
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{
        sse::{Event, Sse},
        IntoResponse, Response,
    },
    routing::post,
    Json, Router,
};
use conversation::Answer;
use serde::Serialize;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Requests bigger than this are refused; long agent sessions send megabytes of history.
const BODY_LIMIT: usize = 256 * 1024 * 1024;

/// Environment variable naming a directory where every request body is dumped as JSON.
const DUMP_DIR_ENV: &str = "SCRIPTED_MODEL_DUMP_DIR";

/// One request the server saw, for test assertions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordedRequest {
    /// Request path without the query, e.g. `/v1/messages`.
    pub path: String,
    /// Raw query string, e.g. `beta=true`.
    pub query: Option<String>,
    /// `model` field of the body.
    pub model: Option<String>,
    /// `stream` field of the body.
    pub stream: bool,
    /// The body offered a non-empty `tools` array.
    pub has_tools: bool,
    /// Index of the script step served, if a script step was served.
    pub step: Option<usize>,
    /// A side request (title, summary, no tools) that did not consume a step.
    pub side: bool,
    /// HTTP status answered.
    pub status: u16,
    /// `anthropic-version` header.
    pub anthropic_version: Option<String>,
    /// `anthropic-beta` header.
    pub anthropic_beta: Option<String>,
    /// `user-agent` header.
    pub user_agent: Option<String>,
    /// The usage the answer reported, `(input_tokens, output_tokens)`, for an answered
    /// message (what a gateway metering it must arrive at).
    pub usage: Option<(u64, u64)>,
    /// The body's `messages`: the conversation the request carried (a resumed session's
    /// earlier turns included).
    pub messages: Vec<RecordedMessage>,
}

/// One message of a recorded request, for assertions on what a conversation carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordedMessage {
    /// `user` or `assistant`.
    pub role: String,
    /// The text of its text blocks in order (a plain string content is one).
    pub texts: Vec<String>,
}

#[derive(Debug)]
struct Shared {
    /// When set, requests must carry it (`x-api-key` or `Authorization: Bearer`), as
    /// Anthropic's API checks keys; others are answered 401 `authentication_error`.
    api_key: Option<String>,
    requests: Mutex<Vec<RecordedRequest>>,
    cancel: CancellationToken,
    dump_dir: Option<PathBuf>,
    dumped: AtomicUsize,
}

impl Shared {
    fn record(&self, request: RecordedRequest) {
        tracing::info!(
            path = %request.path, query = ?request.query, model = ?request.model,
            stream = request.stream,
            step = ?request.step, side = request.side, status = request.status,
            version = ?request.anthropic_version, beta = ?request.anthropic_beta,
            user_agent = ?request.user_agent,
            "scripted-model request"
        );
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(request);
    }

    fn dump(&self, path: &str, body: &[u8]) {
        let Some(dir) = &self.dump_dir else { return };
        let n = self.dumped.fetch_add(1, Ordering::SeqCst);
        let name = format!("{n:04}{}.json", path.replace('/', "_"));
        if let Err(err) =
            std::fs::create_dir_all(dir).and_then(|()| std::fs::write(dir.join(name), body))
        {
            tracing::warn!(%err, "scripted-model: cannot dump request body");
        }
    }
}

/// A running scripted model server on 127.0.0.1; dropping it stops the server.
#[derive(Debug)]
pub struct ScriptedModel {
    port: u16,
    shared: Arc<Shared>,
}

impl ScriptedModel {
    /// Starts the server on a free loopback port.
    pub async fn start() -> anyhow::Result<ScriptedModel> {
        Self::start_on(0).await
    }

    /// Starts the server on a free loopback port, answering only requests that carry
    /// `api_key` (`x-api-key` or bearer) and 401 `authentication_error` to the rest.
    pub async fn start_with_api_key(api_key: &str) -> anyhow::Result<ScriptedModel> {
        Self::serve(0, Some(api_key.to_owned())).await
    }

    /// Starts the server on `127.0.0.1:port` (0 picks a free port).
    pub async fn start_on(port: u16) -> anyhow::Result<ScriptedModel> {
        Self::serve(port, None).await
    }

    async fn serve(port: u16, api_key: Option<String>) -> anyhow::Result<ScriptedModel> {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("scripted-model: cannot bind 127.0.0.1:{port}"))?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            api_key,
            requests: Mutex::new(Vec::new()),
            cancel: CancellationToken::new(),
            dump_dir: std::env::var_os(DUMP_DIR_ENV).map(PathBuf::from),
            dumped: AtomicUsize::new(0),
        });
        let app = router(shared.clone());
        let cancel = shared.cancel.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(cancel.cancelled_owned())
                .await;
            if let Err(err) = served {
                tracing::error!(%err, "scripted-model server stopped");
            }
        });
        Ok(ScriptedModel { port, shared })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` (claude: `ANTHROPIC_BASE_URL`; opencode: this plus `/v1`).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request served so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops the server (same as dropping it).
    pub fn shutdown(self) {}
}

impl Drop for ScriptedModel {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(shared)
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn recorded(uri: &Uri, headers: &HeaderMap, body: Option<&Value>, status: u16) -> RecordedRequest {
    RecordedRequest {
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        model: body.and_then(conversation::model),
        stream: body.and_then(|b| b["stream"].as_bool()).unwrap_or(false),
        has_tools: body
            .and_then(|b| b["tools"].as_array())
            .is_some_and(|t| !t.is_empty()),
        step: None,
        side: false,
        status,
        anthropic_version: header(headers, "anthropic-version"),
        anthropic_beta: header(headers, "anthropic-beta"),
        user_agent: header(headers, "user-agent"),
        usage: None,
        messages: body.map(recorded_messages).unwrap_or_default(),
    }
}

fn recorded_messages(body: &Value) -> Vec<RecordedMessage> {
    body.get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|m| RecordedMessage {
            role: m["role"].as_str().unwrap_or_default().to_owned(),
            texts: conversation::texts(&m["content"])
                .into_iter()
                .map(str::to_owned)
                .collect(),
        })
        .collect()
}

fn error_response(status: u16, kind: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Json(reply::error_body(kind, message))).into_response();
    response.headers_mut().insert(
        "request-id",
        format!("req_scripted_{}", uuid::Uuid::new_v4().simple())
            .parse()
            .expect("ascii header"),
    );
    response
}

/// Dumps and parses a JSON body; a bad body is recorded and answered with a 400, a
/// request without the required key with a 401.
fn parse_body(
    shared: &Shared,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Value, Box<Response>> {
    if let Some(key) = &shared.api_key {
        let presented = header(headers, "x-api-key").or_else(|| {
            header(headers, "authorization")
                .and_then(|v| v.strip_prefix("Bearer ").map(str::to_owned))
        });
        if presented.as_deref() != Some(key.as_str()) {
            shared.record(recorded(uri, headers, None, 401));
            return Err(Box::new(error_response(
                401,
                "authentication_error",
                "invalid x-api-key",
            )));
        }
    }
    shared.dump(uri.path(), body);
    serde_json::from_slice(body).map_err(|err| {
        shared.record(recorded(uri, headers, None, 400));
        Box::new(error_response(
            400,
            "invalid_request_error",
            &format!("scripted-model: body is not JSON: {err}"),
        ))
    })
}

async fn messages(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed = match parse_body(&shared, &uri, &headers, &body) {
        Ok(v) => v,
        Err(response) => return *response,
    };
    let decision = conversation::decide(&parsed);
    let status = match &decision.answer {
        Answer::Error { status, .. } => *status,
        _ => 200,
    };
    let mut request = recorded(&uri, &headers, Some(&parsed), status);
    request.step = decision.step;
    request.side = decision.side;
    let input_tokens = reply::estimate_tokens(body.len());
    if status == 200 {
        request.usage = Some((input_tokens, reply::output_tokens(&decision.answer)));
    }
    let stream = request.stream;
    shared.record(request);

    if !decision.delay.is_zero() {
        tokio::select! {
            () = tokio::time::sleep(decision.delay) => {}
            () = shared.cancel.cancelled() => {
                return error_response(503, "api_error", "scripted-model: shutting down");
            }
        }
    }
    let model = conversation::model(&parsed).unwrap_or_else(|| "scripted-model".into());
    match &decision.answer {
        Answer::Error {
            status,
            kind,
            message,
        } => error_response(*status, kind, message),
        answer if stream => {
            let events = reply::sse_events(answer, &model, input_tokens)
                .into_iter()
                .map(|(name, data)| {
                    Ok::<_, Infallible>(Event::default().event(name).data(data.to_string()))
                });
            Sse::new(futures::stream::iter(events)).into_response()
        }
        answer => Json(reply::message_json(answer, &model, input_tokens)).into_response(),
    }
}

async fn count_tokens(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed = match parse_body(&shared, &uri, &headers, &body) {
        Ok(v) => v,
        Err(response) => return *response,
    };
    shared.record(recorded(&uri, &headers, Some(&parsed), 200));
    Json(serde_json::json!({"input_tokens": reply::estimate_tokens(body.len())})).into_response()
}

async fn not_found(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    tracing::warn!(%method, %uri, "scripted-model: unknown path");
    shared.record(recorded(&uri, &headers, None, 404));
    error_response(
        404,
        "not_found_error",
        &format!("scripted-model: no route for {method} {}", uri.path()),
    )
}
