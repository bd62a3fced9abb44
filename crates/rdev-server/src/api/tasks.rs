//! `/tasks`: list and show tasks (with their attempts and callback deliveries), stream a
//! task's events as SSE (replaying from `Last-Event-ID`, then live), and cancel a task.

use std::convert::Infallible;

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
    response::sse::{Event, KeepAlive, Sse},
    Extension, Json,
};
use futures::{Stream, StreamExt};
use rdev_core::{Grant, ProjectName, TaskFilter, TaskId, TaskStatus};
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    error::ErrorBody,
    extract::{Path, Query},
    project_routes::parse_name,
    task_schema::{CallbackDelivery, Retried, SseEvent, TaskDetail, TaskList, TaskView},
    ApiError, AppState,
};
use crate::live::FeedItem;

/// Task routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(events))
        .routes(routes!(cancel))
        .routes(routes!(retry))
}

fn parse_id(id: &str) -> Result<TaskId, ApiError> {
    id.parse()
        .map_err(|e| ApiError::from_code(StatusCode::BAD_REQUEST, &e))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only this project's tasks.
    #[param(value_type = Option<ProjectName>)]
    project: Option<String>,
    /// Only tasks with this status.
    #[param(value_type = Option<TaskStatus>)]
    status: Option<String>,
    /// Only tasks created before this one (the last id of the previous page).
    #[param(value_type = Option<TaskId>)]
    before: Option<String>,
    /// How many tasks at most (default 50; above 500 counts as 500).
    #[param(format = Int64, minimum = 0, maximum = 4294967295_u64)]
    limit: Option<u32>,
}

/// Tasks, newest first. A project-limited token sees only its projects' tasks
/// (`auth::authorize` has already refused a `?project=` outside them).
#[utoipa::path(get, path = "/tasks", operation_id = "list_tasks", tag = "tasks",
    params(ListQuery),
    responses(
        (status = 200, description = "The tasks.", body = TaskList),
        (status = 400, description = "codes: invalid_field, invalid_query", body = ErrorBody),
        (status = 422, description = "codes: invalid_project_name", body = ErrorBody),
    ))]
async fn list(
    State(state): State<AppState>,
    Extension(grant): Extension<Grant>,
    Query(q): Query<ListQuery>,
) -> Result<Json<TaskList>, ApiError> {
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
    Ok(Json(TaskList {
        tasks: tasks.iter().map(TaskView::of).collect(),
    }))
}

/// A task with its attempts, callback deliveries and metered model usage.
#[utoipa::path(get, path = "/tasks/{id}", operation_id = "get_task", tag = "tasks",
    params(("id" = TaskId, Path, description = "The task.")),
    responses(
        (status = 200, description = "The task.", body = TaskDetail),
        (status = 400, description = "codes: invalid_field", body = ErrorBody),
        (status = 404, description = "codes: not_found", body = ErrorBody),
    ))]
async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TaskDetail>, ApiError> {
    let id = parse_id(&id)?;
    let task = state.store.get(id).await?;
    let attempts = state.store.attempts(id).await?;
    let callbacks = state.store.outbox_for_task(id).await?;
    // Model usage as the gateway metered it: totals, and per attempt and model.
    let usage = state.store.task_usage(id).await?;
    Ok(Json(TaskDetail {
        task: TaskView::of(&task),
        attempts,
        callbacks: callbacks.iter().map(CallbackDelivery::of).collect(),
        usage: rdev_core::TaskUsage::of(usage),
    }))
}

/// Cancels a queued or running task.
#[utoipa::path(post, path = "/tasks/{id}/cancel", operation_id = "cancel_task", tag = "tasks",
    params(("id" = TaskId, Path, description = "The task.")),
    responses(
        (status = 200, description = "The cancelled task.", body = TaskView),
        (status = 400, description = "codes: invalid_field", body = ErrorBody),
        (status = 404, description = "codes: not_found", body = ErrorBody),
        (status = 409, description = "codes: invalid_transition, conflict, lease_lost", body = ErrorBody),
    ))]
async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    let id = parse_id(&id)?;
    let task = state.store.cancel(id).await?;
    // The worker running it (if on this node) stops at once; on other nodes it notices the
    // lost lease at its next heartbeat.
    state.running.cancel(id);
    tracing::info!(task_id = %id, "task cancelled");
    Ok(Json(TaskView::of(&task)))
}

/// `POST /tasks/{id}/retry`: a new task with the spec of a failed or cancelled one,
/// linked by `retry_of`. 202 with the new task; asking again returns the same retry (200).
/// 409 `not_retryable` for a task that is queued, running or completed.
#[utoipa::path(post, path = "/tasks/{id}/retry", operation_id = "retry_task", tag = "tasks",
    params(("id" = TaskId, Path, description = "The task.")),
    responses(
        (status = 202, description = "The new task, queued.", body = Retried, links(
            ("task" = (operation_id = "get_task", parameters(("id" = "$response.body#/task_id")))),
        )),
        (status = 200, description = "The retry an earlier request made.", body = Retried, links(
            ("task" = (operation_id = "get_task", parameters(("id" = "$response.body#/task_id")))),
        )),
        (status = 400, description = "codes: invalid_field", body = ErrorBody),
        (status = 404, description = "codes: not_found", body = ErrorBody),
        (status = 409, description = "codes: not_retryable, conflict", body = ErrorBody),
    ))]
async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Retried>), ApiError> {
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
        Json(Retried {
            task_id: task.id,
            status: task.status,
            retry_of: id,
        }),
    ))
}

/// SSE stream of a task's events: every stored event after `Last-Event-ID` (the per-task
/// sequence number), then new ones as they are stored, ending with an `end` event once the
/// task is finished and every event has been sent.
#[utoipa::path(get, path = "/tasks/{id}/events", operation_id = "task_events", tag = "tasks",
    params(
        ("id" = TaskId, Path, description = "The task."),
        ("Last-Event-ID" = Option<String>, Header, nullable = false,
            description = "Resume after this event (its `seq`); anything but a number starts \
                from the first event."),
    ),
    responses(
        (status = 200, description = "Server-sent events: one per stored event (`id` its \
            `seq`, `event` its kind, `data` `{\"seq\",\"at\",\"kind\",\"payload\"}`), then \
            `end` with `{\"status\"}` once the task is finished; `error` with \
            `{\"code\",\"message\"}` if the store fails.",
            content_type = "text/event-stream", body = SseEvent),
        (status = 400, description = "codes: invalid_field", body = ErrorBody),
        (status = 404, description = "codes: not_found", body = ErrorBody),
    ))]
async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let id = parse_id(&id)?;
    state.store.get(id).await?;
    let after: i64 = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    // One poll per task per node, shared by every viewer (`crate::live`).
    let stream = state
        .live
        .tasks
        .watch(id, after)
        .filter_map(|item| async move {
            Some(Ok(match item {
                FeedItem::Event(ev) => {
                    let data =
                        json!({"seq": ev.seq, "at": ev.at, "kind": ev.kind, "payload": ev.payload});
                    Event::default()
                        .id(ev.seq.to_string())
                        .event(ev.kind.clone())
                        .data(data.to_string())
                }
                FeedItem::End(status) => Event::default()
                    .event("end")
                    .data(json!({"status": status}).to_string()),
                FeedItem::Failed(message) => Event::default()
                    .event("error")
                    .data(json!({"code": "store_unavailable", "message": message}).to_string()),
                // Snapshots of the row are for the UI; this stream carries events only.
                FeedItem::Task(_) => return None,
            }))
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
