//! `/tasks`: list and show tasks (with their attempts and callback deliveries), stream a
//! task's events as SSE (replaying from `Last-Event-ID`, then live), and cancel a task.

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
    response::sse::{Event, KeepAlive, Sse},
    routing::{get, post},
    Extension, Json, Router,
};

use super::extract::{Path, Query};
use futures::Stream;
use rdev_core::{Grant, TaskFilter, TaskId, TaskStatus, WorkTask};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{project_routes::parse_name, ApiError, AppState};

/// Task routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/tasks", get(list))
        .route("/tasks/{id}", get(show))
        .route("/tasks/{id}/events", get(events))
        .route("/tasks/{id}/cancel", post(cancel))
        .route("/tasks/{id}/retry", post(retry))
}

/// How often the event stream looks for new events of a live task. Polling the store (not
/// an in-process channel) makes the stream work on every node of a multi-node deployment.
const EVENT_POLL: Duration = Duration::from_millis(200);
/// Events read per store query.
const EVENT_PAGE: u32 = 500;

fn parse_id(id: &str) -> Result<TaskId, ApiError> {
    id.parse()
        .map_err(|e| ApiError::from_code(StatusCode::BAD_REQUEST, &e))
}

/// The public JSON of a task.
pub fn task_json(t: &WorkTask) -> Value {
    json!({
        "id": t.id,
        "project": t.project,
        "status": t.status,
        "attempt": t.attempt,
        "created_at": t.created_at,
        "started_at": t.started_at,
        "finished_at": t.finished_at,
        "spec": t.spec,
        "result": t.result,
        "error": t.error,
        "retry_of": t.retry_of,
    })
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    project: Option<String>,
    status: Option<String>,
    before: Option<String>,
    limit: Option<u32>,
}

/// A project-limited token sees only its projects' tasks (`auth::authorize` has already
/// refused a `?project=` outside them).
async fn list(
    State(state): State<AppState>,
    Extension(grant): Extension<Grant>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let filter = TaskFilter {
        project: q.project.as_deref().map(parse_name).transpose()?,
        projects: grant.project_limit().map(<[_]>::to_vec),
        status: q
            .status
            .as_deref()
            .map(|s| s.parse::<TaskStatus>())
            .transpose()
            .map_err(|e| ApiError::from_code(StatusCode::BAD_REQUEST, &e))?,
        before: q.before.as_deref().map(parse_id).transpose()?,
        limit: q.limit.unwrap_or(50).min(500),
    };
    let tasks = state.store.list(&filter).await?;
    Ok(Json(
        json!({"tasks": tasks.iter().map(task_json).collect::<Vec<_>>()}),
    ))
}

async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let task = state.store.get(id).await?;
    let attempts = state.store.attempts(id).await?;
    let callbacks = state.store.outbox_for_task(id).await?;
    let mut body = task_json(&task);
    body["attempts"] = json!(attempts);
    body["callbacks"] = json!(callbacks
        .iter()
        .map(|c| json!({
            "url": c.url,
            "attempts": c.attempts,
            "next_attempt_at": c.next_attempt_at,
            "last_error": c.last_error,
            "delivered_at": c.delivered_at,
            "expired_at": c.expired_at,
        }))
        .collect::<Vec<_>>());
    // Model usage as the gateway metered it: totals, and per attempt and model.
    let usage = state.store.task_usage(id).await?;
    body["usage"] = json!(rdev_core::TaskUsage::of(usage));
    Ok(Json(body))
}

async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let task = state.store.cancel(id).await?;
    // The worker running it (if on this node) stops at once; on other nodes it notices the
    // lost lease at its next heartbeat.
    state.running.cancel(id);
    tracing::info!(task_id = %id, "task cancelled");
    Ok(Json(task_json(&task)))
}

/// `POST /tasks/{id}/retry`: a new task with the spec of a failed or cancelled one,
/// linked by `retry_of`. 202 with the new task; asking again returns the same retry (200).
/// 409 `not_retryable` for a task that is queued, running or completed.
async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = parse_id(&id)?;
    let enqueued = state
        .store
        .retry(id)
        .await
        .map_err(|e| super::error::retry_error(id, e))?;
    let status = if enqueued.created {
        tracing::info!(task_id = %enqueued.task.id, retry_of = %id, "task retried");
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let task = enqueued.task;
    Ok((
        status,
        Json(json!({"task_id": task.id, "status": task.status, "retry_of": id})),
    ))
}

/// SSE stream of a task's events: every stored event after `Last-Event-ID` (the per-task
/// sequence number), then new ones as they are stored, ending with an `end` event once the
/// task is finished and every event has been sent.
async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let id = parse_id(&id)?;
    state.store.get(id).await?;
    let mut after: i64 = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let store = state.store.clone();
    let stream = async_stream::stream! {
        loop {
            // Read the status before the events, so events stored just before the task
            // finished are sent before `end`.
            let finished = match store.get(id).await {
                Ok(t) => t.status.is_terminal().then_some(t.status),
                Err(e) => {
                    yield Ok(Event::default().event("error").data(json!({"code": "store_unavailable", "message": e.to_string()}).to_string()));
                    break;
                }
            };
            match store.events_since(id, after, EVENT_PAGE).await {
                Ok(batch) => {
                    let full = batch.len() as u32 == EVENT_PAGE;
                    for ev in batch {
                        after = ev.seq;
                        let data = json!({"seq": ev.seq, "at": ev.at, "kind": ev.kind, "payload": ev.payload});
                        yield Ok(Event::default().id(ev.seq.to_string()).event(ev.kind.clone()).data(data.to_string()));
                    }
                    if full {
                        continue;
                    }
                }
                Err(e) => {
                    yield Ok(Event::default().event("error").data(json!({"code": "store_unavailable", "message": e.to_string()}).to_string()));
                    break;
                }
            }
            if let Some(status) = finished {
                yield Ok(Event::default().event("end").data(json!({"status": status}).to_string()));
                break;
            }
            tokio::time::sleep(EVENT_POLL).await;
        }
    };
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
