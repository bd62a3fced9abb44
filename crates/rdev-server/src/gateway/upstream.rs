//! Sending one model call to the configured upstreams in order, with the real key in place
//! of the agent's token ([`super::keys`]). An upstream whose key cannot be read, that
//! refuses the connection, does not answer within the first-byte timeout, or answers
//! 5xx/529 is skipped for the next one, for this call only; a 429 is retried once on the same upstream after its `retry-after` (when that is
//! short enough) before moving on. All of this happens before the first byte reaches the
//! agent: once a response is handed back, it is streamed as it is, never switched. The last
//! upstream's answer, whatever it is, goes to the agent. Each skip is reported to the
//! caller ([`Failover`]), which records it.

use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderName, Method};
use bytes::Bytes;

use rdev_core::{error::error_chain, SecretString};

use super::keys::UpstreamKeys;
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

/// One call's request, replayable on every upstream.
#[derive(Debug)]
pub struct Call<'a> {
    pub method: Method,
    /// Path and query, as the agent sent them (`/v1/messages?beta=true`).
    pub path_and_query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: Bytes,
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
    call: &Call<'_>,
) -> reqwest::RequestBuilder {
    let mut headers = call.headers.clone();
    for h in DROP_REQUEST {
        headers.remove(h);
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
    http.request(call.method.clone(), url(upstream, call.path_and_query))
        .headers(headers)
        .body(call.body.clone())
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
pub async fn send(
    http: &reqwest::Client,
    upstreams: &[Upstream],
    keys: &UpstreamKeys,
    timing: Timing,
    call: Call<'_>,
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
        let skip = match keys.key(upstream).await {
            Err(e) => ("key", e.to_string(), false),
            Ok(key) => loop {
                let sent = request(http, upstream, key.as_ref(), &call).send();
                let sent = tokio::time::timeout(timeout, sent).await;
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
                            drop(response);
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
