//! The Messages API handler: find the call's grant by its token, read its body (a large
//! one already streaming to the first upstream, all but its last byte: [`super::upload`]),
//! reserve its worst case against the budget, send it upstream ([`super::upstream`]; a
//! streamed request is completed, or aborted when the call is refused), and stream the
//! answer back byte for byte while every chunk is read for usage as it passes
//! ([`super::meter`]); the call is settled when the response ends, however it ends.
//! Errors rdev itself answers with have the Anthropic error shape.

use std::sync::Arc;

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use futures::StreamExt;
use rdev_core::MeteredUsage;

use super::{
    grants::{AuthError, GrantState, Refusal, Reservation, Spend, SESSION_HEADER},
    meter, upload,
    upstream::{self, Call, Head, DROP_RESPONSE},
    Gateway,
};

/// The largest request body accepted (long sessions send megabytes of history).
const MAX_BODY: usize = 256 * 1024 * 1024;

/// An error in the Anthropic shape: `{"type":"error","error":{"type","message"}}`.
pub fn api_error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let body = serde_json::json!({
        "type": "error",
        "error": {"type": kind, "message": message.into()},
    });
    (status, axum::Json(body)).into_response()
}

/// The agent's token: `x-api-key`, else `Authorization: Bearer`.
pub fn presented_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Authenticates a call: its grant, or the 401 the agent gets.
pub fn authenticate(gw: &Gateway, headers: &HeaderMap) -> Result<Arc<GrantState>, Box<Response>> {
    let session = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok());
    gw.inner
        .grants
        .authenticate(presented_token(headers), session)
        .map_err(|e| {
            let why = match e {
                AuthError::Missing => "no API key: rdev's gateway expects the run's token",
                AuthError::Unknown => {
                    "invalid or expired token: it is valid only while its attempt runs"
                }
                AuthError::UnknownSession => "no running task owns this session",
            };
            Box::new(api_error(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                why,
            ))
        })
}

/// The worst a call can cost: its input (estimated at one token per four request bytes)
/// and all of `max_tokens` as output, at the model's price.
fn worst_case(gw: &Gateway, model: &str, usage: &MeteredUsage) -> Spend {
    Spend {
        cost_usd: gw.inner.settings.prices.cost(model, usage),
        tokens: usage.total_tokens(),
    }
}

/// The most a call can use: its input (estimated at one token per four request bytes) and
/// all of its `max_tokens`.
fn worst_usage(body_len: usize, max_tokens: u64) -> MeteredUsage {
    MeteredUsage {
        input_tokens: (body_len as u64).div_ceil(4),
        output_tokens: max_tokens,
        ..Default::default()
    }
}

/// `POST /v1/messages` and `POST /v1/messages/count_tokens`.
pub async fn messages(State(gw): State<Gateway>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let grant = match authenticate(&gw, &parts.headers) {
        Ok(g) => g,
        Err(r) => return *r,
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str());
    let head = Head {
        method: &parts.method,
        path_and_query,
        headers: &parts.headers,
    };
    let declared = parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = |e: &dyn std::fmt::Display| {
        api_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!("request body not read: {e}"),
        )
    };
    if declared.is_some_and(|d| d > MAX_BODY as u64) {
        return too_large(&upload::ReadError::TooLarge);
    }
    let settings = &gw.inner.settings;
    // A body larger than its first frame goes to the first upstream as it is read; the
    // call is decided once it is whole, and dropping `early` before then aborts it.
    let read = upload::read(body, MAX_BODY, declared, |streamed| {
        let (http, keys) = (&gw.inner.http, &gw.inner.keys);
        upstream::start_first(http, &settings.upstreams, keys, head, streamed, declared)
    })
    .await;
    let (body, fields, early) = match read {
        Ok(r) => (r.body, r.fields, r.early),
        Err(e) => return too_large(&e),
    };
    let metered = parts.uri.path() == "/v1/messages";
    let model = fields.model.clone().unwrap_or_default();
    let reservation = if metered {
        let worst = worst_usage(body.len(), fields.max_tokens.unwrap_or(4096));
        match grant.reserve(worst_case(&gw, &model, &worst)) {
            Ok(r) => Some((r, worst)),
            Err(Refusal::Revoked) => {
                return api_error(
                    StatusCode::UNAUTHORIZED,
                    "authentication_error",
                    "the attempt this token belonged to has ended",
                )
            }
            Err(Refusal::Held { committed, limit }) => {
                // Retryable: the calls in flight may settle below their worst case.
                let mut r = api_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    format!(
                        "rdev: the rest of the task's budget ({limit}; ${:.4} settled and \
                         reserved) is held by model calls in flight; retry shortly",
                        committed.cost_usd
                    ),
                );
                r.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from_static("1"),
                );
                return r;
            }
            Err(Refusal::Exhausted { spent, limit }) => {
                gw.budget_refused(&grant);
                return api_error(
                    StatusCode::PAYMENT_REQUIRED,
                    "billing_error",
                    format!(
                        "budget_exceeded: the task has spent ${:.4} and {} tokens, reaching \
                         its {limit}; rdev refuses further model calls for it",
                        spent.cost_usd, spent.tokens
                    ),
                );
            }
        }
    } else {
        None
    };
    let call = Call {
        head,
        body,
        streaming: fields.stream.unwrap_or(false),
    };
    // Admitted: the streamed request gets its last byte (in `send`).
    let answer = upstream::send(
        &gw.inner.http,
        &settings.upstreams,
        &gw.inner.keys,
        gw.timing(),
        call,
        early,
        |f| gw.failed_over(&grant, f),
    )
    .await;
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            let status = if e.timed_out {
                StatusCode::GATEWAY_TIMEOUT
            } else {
                StatusCode::BAD_GATEWAY
            };
            tracing::warn!(upstream = %e.upstream, detail = %e.detail, "model call reached no upstream");
            return api_error(
                status,
                "api_error",
                format!(
                    "rdev gateway: upstream {} unreachable: {}",
                    e.upstream, e.detail
                ),
            );
        }
    };
    respond(&gw, answer.response, reservation, model)
}

/// The upstream's response as the agent's: same status, headers (but hop-by-hop ones) and
/// body bytes; a metered call's chunks are read for usage as they pass ([`Metering`]).
fn respond(
    gw: &Gateway,
    upstream: reqwest::Response,
    reservation: Option<(Reservation, MeteredUsage)>,
    requested_model: String,
) -> Response {
    let status = upstream.status();
    let mut headers = upstream.headers().clone();
    for h in DROP_RESPONSE {
        headers.remove(h);
    }
    let sse = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let stream = upstream.bytes_stream();
    let body = match reservation {
        None => Body::from_stream(stream),
        Some((reservation, worst)) => {
            // Read on the forwarding task itself: a task woken per chunk (the first
            // version's side reader) cost more than the reading does.
            let mut metering = Metering {
                gw: gw.clone(),
                reservation: Some(reservation),
                worst,
                requested_model,
                ok: status.is_success(),
                meter: Some(meter::Meter::new(sse)),
            };
            Body::from_stream(stream.map(move |chunk| {
                if let (Ok(bytes), Some(meter)) = (&chunk, metering.meter.as_mut()) {
                    meter.feed(bytes);
                }
                chunk
            }))
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// A metered response's usage, read from its chunks as they are forwarded; settled when
/// the body is dropped (the response finished, or either side went away), with whatever
/// was read by then.
struct Metering {
    gw: Gateway,
    reservation: Option<Reservation>,
    /// What the call is billed if its response cannot be read ([`meter::Reported::unreadable`]).
    worst: MeteredUsage,
    requested_model: String,
    ok: bool,
    meter: Option<meter::Meter>,
}

impl Drop for Metering {
    fn drop(&mut self) {
        let (Some(reservation), Some(meter)) = (self.reservation.take(), self.meter.take()) else {
            return;
        };
        let mut reported = meter.finish();
        if reported.unreadable {
            tracing::warn!(
                model = %self.requested_model,
                "a model response could not be metered; billed at the call's worst case"
            );
            reported.usage = self.worst;
            reported.seen = true;
        }
        // Dropped inside the server's runtime; at its shutdown the reservation just goes.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (gw, model, ok) = (
                self.gw.clone(),
                std::mem::take(&mut self.requested_model),
                self.ok,
            );
            runtime.spawn(async move { gw.settle(reservation, &model, ok, reported).await });
        }
    }
}
