//! Sending one model call to the configured upstreams in order, with the real key in place
//! of the agent's token ([`super::keys`]). An upstream whose key cannot be read, that
//! refuses the connection, does not answer within the first-byte timeout, or answers
//! 5xx/529 is skipped for the next one, for this call only; a 429 is retried once on the same upstream after its `retry-after` (when that is
//! short enough) before moving on. All of this happens before the first byte reaches the
//! agent: once a response is handed back, it is streamed as it is, never switched. The last
//! upstream's answer, whatever it is, goes to the agent. Each skip is reported to the
//! caller ([`Failover`]), which records it.
//!
//! The first upstream's request may have been started before the call was admitted, its
//! body streaming as the agent's request was read ([`start_first`], [`super::upload`]);
//! its outcome is then that upstream's first try. Every other try (a retry after a 429,
//! the next upstreams) sends the whole body again.

use std::{
    task::{Context, Poll},
    time::Duration,
};

use axum::http::{header, HeaderMap, HeaderName, Method};
use futures::future::BoxFuture;

use rdev_core::{error::error_chain, SecretString};

use super::{
    keys::{KeyError, UpstreamKeys},
    upload::{RequestBody, Upload},
};
use crate::config::{Upstream, UpstreamAuth};

/// Request headers never forwarded upstream: hop-by-hop headers, the agent's credential
/// (replaced by the upstream's key), and `accept-encoding` (the response is read for its
/// usage, so it must arrive uncompressed).
const DROP_REQUEST: &[HeaderName] = &[
    header::HOST,
    header::CONTENT_LENGTH,
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::AUTHORIZATION,
    header::ACCEPT_ENCODING,
];

/// Response headers not passed back: hop-by-hop ones (the agent's connection is its own).
pub const DROP_RESPONSE: &[HeaderName] = &[
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::TRAILER,
    header::UPGRADE,
];

/// One skipped upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failover {
    pub from: String,
    pub to: String,
    /// `key`, `connect`, `timeout`, `status_5xx`, `status_529` or `rate_limited`.
    pub reason: &'static str,
    /// A short description (the status or the error).
    pub detail: String,
}

/// The call could not be sent anywhere.
#[derive(Debug)]
pub struct Unreachable {
    pub upstream: String,
    pub timed_out: bool,
    pub detail: String,
}

/// What an upstream answered with, and which one.
#[derive(Debug)]
pub struct Answer {
    pub response: reqwest::Response,
    pub upstream: String,
}

/// What a call's request is sent as, but its body.
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    pub method: &'a Method,
    /// Path and query, as the agent sent them (`/v1/messages?beta=true`).
    pub path_and_query: &'a str,
    pub headers: &'a HeaderMap,
}

/// One call's request, replayable on every upstream.
#[derive(Debug)]
pub struct Call<'a> {
    pub head: Head<'a>,
    pub body: RequestBody,
    /// A streaming call gets its headers at once; a non-streaming one only when the
    /// whole message is done, so only the former is held to the first-byte timeout.
    pub streaming: bool,
}

/// How long a non-streaming call may take before its upstream counts as not answering.
const NON_STREAMING_TIMEOUT: Duration = Duration::from_secs(600);

/// How the sender behaves (from the gateway's settings).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub first_byte: Duration,
    pub retry_after_max: Duration,
}

fn url(upstream: &Upstream, path_and_query: &str) -> String {
    let base = upstream.base_url.as_str().trim_end_matches('/');
    format!("{base}{path_and_query}")
}

fn request(
    http: &reqwest::Client,
    upstream: &Upstream,
    key: Option<&SecretString>,
    head: Head<'_>,
    (body, length): (reqwest::Body, Option<u64>),
) -> reqwest::RequestBuilder {
    let mut headers = head.headers.clone();
    for h in DROP_REQUEST {
        headers.remove(h);
    }
    if let Some(length) = length {
        // A streamed body would go chunked; the upstream gets the length the agent sent.
        headers.insert(header::CONTENT_LENGTH, length.into());
    }
    headers.remove("x-api-key");
    if let Some(key) = key {
        let (name, value) = match upstream.auth {
            UpstreamAuth::ApiKey => (
                HeaderName::from_static("x-api-key"),
                key.expose().to_owned(),
            ),
            UpstreamAuth::Bearer => (header::AUTHORIZATION, format!("Bearer {}", key.expose())),
        };
        if let Ok(mut v) = axum::http::HeaderValue::from_str(&value) {
            v.set_sensitive(true);
            headers.insert(name, v);
        }
    }
    http.request(head.method.clone(), url(upstream, head.path_and_query))
        .headers(headers)
        .body(body)
}

/// The first upstream's request, started before its call was admitted: the key it was
/// sent with, and its answer, once it came.
pub struct Early {
    key: Result<Option<SecretString>, KeyError>,
    response: Option<Started>,
}

enum Started {
    Waiting(BoxFuture<'static, reqwest::Result<reqwest::Response>>),
    Done(reqwest::Result<reqwest::Response>),
}

impl std::fmt::Debug for Early {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let response = match &self.response {
            None => "not sent",
            Some(Started::Waiting(_)) => "waiting",
            Some(Started::Done(_)) => "answered",
        };
        f.debug_struct("Early")
            .field("key", &self.key.as_ref().map(Option::is_some))
            .field("response", &response)
            .finish()
    }
}

impl super::upload::Drive for Early {
    fn progress(&mut self, cx: &mut Context<'_>) {
        Early::progress(self, cx);
    }
}

impl Early {
    /// Drives the request (its connection, its head, the body so far) and keeps its
    /// answer when it comes; for polling while the agent's body is still read.
    pub fn progress(&mut self, cx: &mut Context<'_>) {
        if let Some(Started::Waiting(pending)) = &mut self.response {
            if let Poll::Ready(r) = pending.as_mut().poll(cx) {
                self.response = Some(Started::Done(r));
            }
        }
    }
}

/// Starts the call on the first upstream with `body` streaming (`length`: the agent's
/// `content-length`, sent as it is). `None` without upstreams. When the first upstream's
/// key cannot be read, nothing is sent, and [`send`] skips it as usual without reading
/// the key again.
pub async fn start_first(
    http: &reqwest::Client,
    upstreams: &[Upstream],
    keys: &UpstreamKeys,
    head: Head<'_>,
    body: reqwest::Body,
    length: Option<u64>,
) -> Option<Early> {
    let upstream = upstreams.first()?;
    let key = keys.key(upstream).await;
    let response = key.as_ref().ok().map(|key| {
        let request = request(http, upstream, key.as_ref(), head, (body, length));
        Started::Waiting(Box::pin(request.send()))
    });
    Some(Early { key, response })
}

/// Seconds in a `retry-after` header (delta-seconds; Anthropic sends those).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim()
        .parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
}

/// Sends `call` to `upstreams` in order, each with its key from `keys` (see the module
/// docs); `failover` hears of every skipped upstream before the next one is tried.
/// `early`: the first upstream's request, started while the body was read, and the rest
/// of its body: completed when it is still waiting for it (or answered before it and is
/// passed on), aborted when it answered before it and is skipped or retried.
pub async fn send(
    http: &reqwest::Client,
    upstreams: &[Upstream],
    keys: &UpstreamKeys,
    timing: Timing,
    call: Call<'_>,
    mut early: Option<(Early, Upload)>,
    mut failover: impl FnMut(Failover),
) -> Result<Answer, Unreachable> {
    let timeout = if call.streaming {
        timing.first_byte
    } else {
        NON_STREAMING_TIMEOUT.max(timing.first_byte)
    };
    let mut last = None;
    for (i, upstream) in upstreams.iter().enumerate() {
        let next = upstreams.get(i + 1);
        let mut retried = false;
        let (key, mut started, mut upload) = match early.take().filter(|_| i == 0) {
            Some((early, upload)) => (early.key, early.response, Some(upload)),
            None => (keys.key(upstream).await, None, None),
        };
        let skip = match key {
            Err(e) => ("key", e.to_string(), false),
            Ok(key) => loop {
                // The first-byte timeout starts once the whole body is on its way, as it
                // does for a request sent only then.
                let sent = match started.take() {
                    Some(Started::Done(r)) => Ok(r),
                    Some(Started::Waiting(pending)) => {
                        if let Some(upload) = upload.take() {
                            upload.complete();
                        }
                        tokio::time::timeout(timeout, pending).await
                    }
                    None => {
                        let body = call.body.to_upstream();
                        let sent = request(http, upstream, key.as_ref(), call.head, body).send();
                        tokio::time::timeout(timeout, sent).await
                    }
                };
                let response = match sent {
                    Err(_) => {
                        break ("timeout", format!("no response within {timeout:?}"), true);
                    }
                    Ok(Err(e)) => {
                        let timed_out = e.is_timeout();
                        break (
                            if timed_out { "timeout" } else { "connect" },
                            error_chain(&e),
                            timed_out,
                        );
                    }
                    Ok(Ok(r)) => r,
                };
                let status = response.status().as_u16();
                if status == 429 && !retried {
                    if let Some(wait) = retry_after(response.headers()) {
                        if wait <= timing.retry_after_max {
                            retried = true;
                            drop((response, upload.take()));
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                    }
                }
                let reason = match status {
                    529 => "status_529",
                    500..=599 => "status_5xx",
                    429 => "rate_limited",
                    _ => "",
                };
                if reason.is_empty() || next.is_none() {
                    if let Some(upload) = upload.take() {
                        upload.complete();
                    }
                    return Ok(Answer {
                        response,
                        upstream: upstream.name.clone(),
                    });
                }
                break (reason, format!("HTTP {status}"), false);
            },
        };
        let (reason, detail, timed_out) = skip;
        match next {
            Some(next) => failover(Failover {
                from: upstream.name.clone(),
                to: next.name.clone(),
                reason,
                detail,
            }),
            None => {
                last = Some(Unreachable {
                    upstream: upstream.name.clone(),
                    timed_out,
                    detail,
                })
            }
        }
    }
    Err(last.unwrap_or(Unreachable {
        upstream: String::new(),
        timed_out: false,
        detail: "no upstream is configured".into(),
    }))
}
