//! [`OpenCodeClient`]: the HTTP side of `opencode serve` — health, sessions, prompts,
//! abort, status, messages, and the `GET /event` SSE subscription (parsed by
//! `eventsource-stream`, never by hand). Every failure becomes a [`ClientError`] carrying
//! method, path, status and a short body snippet. It knows the wire, not the run: it never
//! decides when to abort or how a run ends, and it never logs or formats the password.

use std::{collections::HashMap, path::Path, pin::Pin, time::Duration};

use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use rdev_core::{error::error_chain, AgentError, ErrorCode, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::ModelRef;

/// How much of an error body is kept: enough for OpenCode's `{"name","data":{"message"}}`,
/// short enough for a log line.
const BODY_SNIPPET_CHARS: usize = 300;

/// How often [`OpenCodeClient::wait_available`] polls the health endpoint.
const HEALTH_POLL: Duration = Duration::from_millis(200);

/// A failed call to the OpenCode server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a non-success status.
    #[error("{method} {path} failed with status {status}: {body}")]
    Http {
        method: &'static str,
        path: String,
        status: u16,
        body: String,
    },
    /// No HTTP response at all (connection refused, reset, timeout).
    #[error("{method} {path} failed before a response: {reason}")]
    Unreachable {
        method: &'static str,
        path: String,
        reason: String,
    },
    /// A response rdev could not decode.
    #[error("{method} {path} returned an unexpected body: {reason}")]
    Decode {
        method: &'static str,
        path: String,
        reason: String,
    },
    /// The server did not become available in time.
    #[error("opencode server at {url} not available after {waited:?}: {reason}")]
    Unavailable {
        url: String,
        waited: Duration,
        reason: String,
    },
}

impl ErrorCode for ClientError {
    fn code(&self) -> &'static str {
        match self {
            Self::Http { .. } => "agent_http_error",
            Self::Unreachable { .. } => "opencode_unreachable",
            Self::Decode { .. } => "agent_protocol_error",
            Self::Unavailable { .. } => "agent_unavailable",
        }
    }
}

impl From<ClientError> for AgentError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Http {
                method,
                path,
                status,
                body,
            } => AgentError::Http {
                method: method.to_owned(),
                path,
                status,
                body,
            },
            ClientError::Unavailable { waited, .. } => AgentError::Unavailable {
                waited,
                reason: e.to_string(),
            },
            ClientError::Unreachable { .. } => AgentError::Io(e.to_string()),
            ClientError::Decode { .. } => AgentError::Protocol(e.to_string()),
        }
    }
}

/// What `GET /global/health` reports.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Health {
    /// Always `true` when the server answers.
    pub healthy: bool,
    /// The server's version, e.g. `1.18.33`.
    pub version: String,
}

/// The fields of an OpenCode session rdev uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SessionInfo {
    /// `ses_...`.
    pub id: String,
    /// The directory the session works in.
    pub directory: String,
}

/// One event from `GET /event`: `{"type": ..., "properties": {...}}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ServerEvent {
    /// The event type, e.g. `message.part.updated`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The payload; most carry a `sessionID`.
    #[serde(default)]
    pub properties: Value,
}

impl ServerEvent {
    /// The session this event belongs to, if it is session-scoped.
    pub fn session_id(&self) -> Option<&str> {
        self.properties.get("sessionID").and_then(Value::as_str)
    }

    /// Whether this is the server's own event (connection, heartbeat, shutdown) rather than
    /// one of a session.
    pub fn is_server_level(&self) -> bool {
        self.kind.starts_with("server.") || self.kind == "global.disposed"
    }
}

/// The live event stream of one subscription.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<ServerEvent, ClientError>> + Send>>;

/// A client for one `opencode serve` base URL.
#[derive(Debug, Clone)]
pub struct OpenCodeClient {
    http: reqwest::Client,
    base: reqwest::Url,
    auth: Option<(String, SecretString)>,
    request_timeout: Duration,
}

impl OpenCodeClient {
    /// A client for `base` with optional basic auth; short calls time out after
    /// `request_timeout` (the SSE stream has no overall timeout).
    pub fn new(
        base: reqwest::Url,
        auth: Option<(String, SecretString)>,
        request_timeout: Duration,
    ) -> Result<Self, ClientError> {
        Self::with_socket(base, None, auth, request_timeout)
    }

    /// The same, reaching the server through the Unix socket `socket` when given (a
    /// sandboxed server, whose relay carries the connection to `base` inside).
    pub fn with_socket(
        base: reqwest::Url,
        socket: Option<&Path>,
        auth: Option<(String, SecretString)>,
        request_timeout: Duration,
    ) -> Result<Self, ClientError> {
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
        if let Some(socket) = socket {
            builder = builder.unix_socket(socket);
        }
        let http = builder.build().map_err(|e| ClientError::Unreachable {
            method: "INIT",
            path: String::new(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            http,
            base,
            auth,
            request_timeout,
        })
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &reqwest::Url {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut url = self.base.clone();
        url.set_path(path);
        let mut req = self.http.request(method, url);
        if let Some((user, password)) = &self.auth {
            req = req.basic_auth(user, Some(password.expose()));
        }
        req
    }

    /// Sends a short call and returns the successful response's body as JSON (`Null` for
    /// an empty body).
    async fn call(
        &self,
        method: &'static str,
        path: &str,
        directory: Option<&Path>,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        self.call_with(method, path, directory, body, Some(self.request_timeout))
            .await
    }

    async fn call_with(
        &self,
        method: &'static str,
        path: &str,
        directory: Option<&Path>,
        body: Option<Value>,
        timeout: Option<Duration>,
    ) -> Result<Value, ClientError> {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut req = self.request(m, path);
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        if let Some(dir) = directory {
            req = req.query(&[("directory", dir.to_string_lossy())]);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let unreachable = |e: reqwest::Error| ClientError::Unreachable {
            method,
            path: path.to_owned(),
            reason: error_chain(&e),
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        let text = resp.text().await.map_err(unreachable)?;
        if !status.is_success() {
            return Err(ClientError::Http {
                method,
                path: path.to_owned(),
                status: status.as_u16(),
                body: snippet(&text),
            });
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| ClientError::Decode {
            method,
            path: path.to_owned(),
            reason: format!("{e}; body: {}", snippet(&text)),
        })
    }

    fn decode<T: serde::de::DeserializeOwned>(
        method: &'static str,
        path: &str,
        v: Value,
    ) -> Result<T, ClientError> {
        serde_json::from_value(v).map_err(|e| ClientError::Decode {
            method,
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// `GET /global/health`.
    pub async fn health(&self) -> Result<Health, ClientError> {
        let path = "/global/health";
        Self::decode("GET", path, self.call("GET", path, None, None).await?)
    }

    /// Polls the health endpoint until it answers, `timeout` passes, or `cancel` fires
    /// (then `Ok(None)`). An auth failure is returned at once: waiting will not fix it.
    pub async fn wait_available(
        &self,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<Option<Health>, ClientError> {
        let start = Instant::now();
        let deadline = start + timeout;
        loop {
            let last = tokio::select! {
                _ = cancel.cancelled() => return Ok(None),
                r = tokio::time::timeout_at(deadline, self.health()) => match r {
                    Ok(Ok(h)) => return Ok(Some(h)),
                    Ok(Err(e @ ClientError::Http { status: 401 | 403, .. })) => return Err(e),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "health check timed out".to_owned(),
                },
            };
            if Instant::now() + HEALTH_POLL >= deadline {
                return Err(ClientError::Unavailable {
                    url: self.base.to_string(),
                    waited: start.elapsed(),
                    reason: last,
                });
            }
            tokio::select! {
                _ = cancel.cancelled() => return Ok(None),
                _ = tokio::time::sleep(HEALTH_POLL) => {}
            }
        }
    }

    /// `POST /session?directory=...`: a new session working in `directory`.
    pub async fn create_session(&self, directory: &Path) -> Result<SessionInfo, ClientError> {
        let path = "/session";
        let v = self
            .call("POST", path, Some(directory), Some(json!({})))
            .await?;
        Self::decode("POST", path, v)
    }

    /// `POST /session/{id}/message`: runs a turn and answers when it has ended (done,
    /// failed or aborted) with the last assistant message. No request timeout: the caller
    /// bounds it (run timeout plus abort grace).
    pub async fn prompt(
        &self,
        session: &str,
        directory: &Path,
        text: &str,
        model: Option<&ModelRef>,
    ) -> Result<Value, ClientError> {
        let path = format!("/session/{session}/message");
        let body = prompt_body(text, model);
        self.call_with("POST", &path, Some(directory), Some(body), None)
            .await
    }

    /// `POST /session/{id}/message` with `noReply`: adds `text` to the conversation as a
    /// user message (marked synthetic: rdev's, not the client's) without a model turn.
    pub async fn note(
        &self,
        session: &str,
        directory: &Path,
        text: &str,
    ) -> Result<(), ClientError> {
        let path = format!("/session/{session}/message");
        let body =
            json!({"noReply": true, "parts": [{"type": "text", "text": text, "synthetic": true}]});
        self.call("POST", &path, Some(directory), Some(body))
            .await?;
        Ok(())
    }

    /// `POST /session/{id}/abort`: stops the running turn; `true` if the server says so.
    pub async fn abort(&self, session: &str, directory: &Path) -> Result<bool, ClientError> {
        let path = format!("/session/{session}/abort");
        let v = self.call("POST", &path, Some(directory), None).await?;
        Ok(v.as_bool().unwrap_or(false))
    }

    /// `GET /session/status`: the sessions that are not idle, with their status type
    /// (`busy`, `retry`).
    pub async fn busy_sessions(
        &self,
        directory: &Path,
    ) -> Result<HashMap<String, String>, ClientError> {
        let path = "/session/status";
        let v = self.call("GET", path, Some(directory), None).await?;
        let map: HashMap<String, Value> = Self::decode("GET", path, v)?;
        Ok(map
            .into_iter()
            .map(|(id, s)| {
                let kind = s.get("type").and_then(Value::as_str).unwrap_or("busy");
                (id, kind.to_owned())
            })
            .filter(|(_, kind)| kind != "idle")
            .collect())
    }

    /// `GET /session/{id}/message`: every message of the session with its parts.
    pub async fn messages(
        &self,
        session: &str,
        directory: &Path,
    ) -> Result<Vec<Value>, ClientError> {
        let path = format!("/session/{session}/message");
        let v = self.call("GET", &path, Some(directory), None).await?;
        Self::decode("GET", &path, v)
    }

    /// `GET /experimental/tool/ids`: the tool names the agent may call.
    pub async fn tool_ids(&self, directory: &Path) -> Result<Vec<String>, ClientError> {
        let path = "/experimental/tool/ids";
        let v = self.call("GET", path, Some(directory), None).await?;
        Self::decode("GET", path, v)
    }

    /// `GET /event?directory=...`: subscribes to the server's events for `directory`. The
    /// returned stream is live once the response headers arrived; OpenCode then sends
    /// `server.connected` first. Malformed events come through as `Decode` errors.
    pub async fn subscribe(&self, directory: &Path) -> Result<EventStream, ClientError> {
        let path = "/event";
        let resp = self
            .request(reqwest::Method::GET, path)
            .query(&[("directory", directory.to_string_lossy())])
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| ClientError::Unreachable {
                method: "GET",
                path: path.to_owned(),
                reason: error_chain(&e),
            })?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(ClientError::Http {
                method: "GET",
                path: path.to_owned(),
                status: status.as_u16(),
                body: snippet(&body),
            });
        }
        let stream = resp.bytes_stream().eventsource().map(|item| match item {
            Ok(ev) => {
                serde_json::from_str::<ServerEvent>(&ev.data).map_err(|e| ClientError::Decode {
                    method: "GET",
                    path: "/event".to_owned(),
                    reason: format!("{e}; data: {}", snippet(&ev.data)),
                })
            }
            Err(e) => Err(ClientError::Unreachable {
                method: "GET",
                path: "/event".to_owned(),
                reason: format!("event stream broke: {e}"),
            }),
        });
        Ok(Box::pin(stream))
    }
}

/// The body of a prompt: one text part, and the model if one is chosen.
fn prompt_body(text: &str, model: Option<&ModelRef>) -> Value {
    let mut body = json!({"parts": [{"type": "text", "text": text}]});
    if let Some(m) = model {
        body["model"] = json!({"providerID": m.provider_id, "modelID": m.model_id});
    }
    body
}

/// The first [`BODY_SNIPPET_CHARS`] characters of `body`, on one line.
pub fn snippet(body: &str) -> String {
    let flat: String = body
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(BODY_SNIPPET_CHARS + 1)
        .collect();
    if flat.chars().count() > BODY_SNIPPET_CHARS {
        let cut: String = flat.chars().take(BODY_SNIPPET_CHARS).collect();
        format!("{cut}...")
    } else {
        flat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_are_short_single_line_and_char_safe() {
        assert_eq!(snippet("a\nb"), "a b");
        let long = "é".repeat(1000);
        let s = snippet(&long);
        assert_eq!(s.chars().count(), BODY_SNIPPET_CHARS + 3);
        assert!(s.ends_with("..."));
    }

    #[test]
    fn http_errors_keep_method_path_status_and_body() {
        let e = ClientError::Http {
            method: "POST",
            path: "/session/ses_1/prompt_async".into(),
            status: 404,
            body: "{\"name\":\"NotFoundError\"}".into(),
        };
        assert_eq!(e.code(), "agent_http_error");
        let a: AgentError = e.into();
        let text = a.to_string();
        for part in [
            "POST",
            "/session/ses_1/prompt_async",
            "404",
            "NotFoundError",
        ] {
            assert!(text.contains(part), "{text}");
        }
    }

    #[test]
    fn events_expose_their_session() {
        let e: ServerEvent = serde_json::from_str(
            r#"{"id":"evt_1","type":"session.idle","properties":{"sessionID":"ses_a"}}"#,
        )
        .unwrap();
        assert_eq!(e.kind, "session.idle");
        assert_eq!(e.session_id(), Some("ses_a"));
    }
}
