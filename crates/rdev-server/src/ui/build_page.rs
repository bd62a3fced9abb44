//! One build (`/ui/builds/{id}`): its status and attempts, the timeline of rdev's steps
//! with durations, the agent's events, cost and tokens, the pushed commit with its deploy
//! URL and pipeline, the callback deliveries (HTTP status, next retry), and the cancel and
//! retry buttons. The page is rendered whole; `build_live` keeps its parts current.
//! Cancel and retry go through the API ([`super::api_client`]).
//!
//! It must not show a build of a project the viewer may not read.

use axum::{
    extract::{Path, State},
    http::{Method, StatusCode},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
    Router,
};
use chrono::Utc;
use maud::{html, Markup};
use rdev_core::{AttemptRecord, OutboxRow, TaskEvent, TaskId, TaskUsage, WorkTask};

use super::{
    api_client,
    build_view::{event_line, summary, timeline},
    builds::store_error,
    layout::{self, Section},
    session::Viewer,
    UiState,
};

/// The build page's routes.
pub fn router() -> Router<UiState> {
    Router::new()
        .route("/ui/builds/{id}", get(show))
        .route("/ui/builds/{id}/details", get(details_fragment))
        .route("/ui/builds/{id}/cancel", post(cancel))
        .route("/ui/builds/{id}/retry", post(retry))
}

/// Most events rendered into the page at load (the newest); older ones are in the API.
const EVENTS_SHOWN: usize = 2000;

/// The task `id` if it exists and the viewer may read it.
async fn load(ui: &UiState, viewer: &Viewer, id: &str) -> Result<WorkTask, Response> {
    let not_found = || {
        (
            StatusCode::NOT_FOUND,
            layout::error_page(Some(viewer), "Not found", &format!("No build {id} here.")),
        )
            .into_response()
    };
    let Ok(id) = id.parse::<TaskId>() else {
        return Err(not_found());
    };
    match ui.services.store.get(id).await {
        // A build the token may not see looks like one that does not exist.
        Ok(t) if viewer.sees(&t.project) => Ok(t),
        Ok(_) | Err(rdev_core::StoreError::NotFound { .. }) => Err(not_found()),
        Err(e) => Err(store_error(viewer, &e)),
    }
}

async fn show(State(ui): State<UiState>, viewer: Viewer, Path(id): Path<String>) -> Response {
    let task = match load(&ui, &viewer, &id).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let store = &ui.services.store;
    let mut events: Vec<TaskEvent> = Vec::new();
    let mut after = 0;
    loop {
        match store.events_since(task.id, after, 500).await {
            Ok(batch) if batch.is_empty() => break,
            Ok(batch) => {
                after = batch.last().map_or(after, |e| e.seq);
                events.extend(batch);
            }
            Err(e) => return store_error(&viewer, &e),
        }
    }
    let details = match details(&ui, &task).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let live = !task.status.is_terminal();
    let shown = events.len().saturating_sub(EVENTS_SHOWN);
    let agent_lines: Vec<Markup> = events[shown..].iter().filter_map(event_line).collect();
    let body = html! {
        h1 { "Build " (layout::short(&task.id.to_string())) " of " a href=(format!("/ui/projects/{}", task.project)) { (task.project) } }
        div hx-ext="sse" sse-connect=[live.then(|| format!("/ui/builds/{}/live?after={after}", task.id))] sse-close="end" {
            section #summary aria-labelledby="h-summary" sse-swap="summary" {
                (summary(&task, &viewer))
            }
            div.split {
                section aria-labelledby="h-timeline" {
                    h2 #h-timeline { "Timeline" }
                    div #timeline sse-swap="timeline" { (timeline(&events, &task)) }
                }
                section aria-labelledby="h-events" {
                    h2 #h-events { "Agent events" }
                    @if shown > 0 { p.muted { (shown) " older events are not shown." } }
                    ol.events #events sse-swap="agent" hx-swap="beforeend" aria-live="polite" {
                        @for line in &agent_lines { (line) }
                    }
                    @if agent_lines.is_empty() { p.muted #no-events { "No agent events yet." } }
                }
            }
            section #details aria-labelledby="h-details" hx-get=(format!("/ui/builds/{}/details", task.id))
                hx-trigger="sse:end" hx-swap="innerHTML" {
                (details)
            }
        }
        details {
            summary { "Request" }
            h2 { "Prompt" }
            pre.card { (task.spec.prompt) }
        }
    };
    layout::page("Build", Some(&viewer), Some(Section::Builds), body).into_response()
}

async fn details_fragment(
    State(ui): State<UiState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Response {
    let task = match load(&ui, &viewer, &id).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    match details(&ui, &task).await {
        Ok(d) => axum::response::Html(d.into_string()).into_response(),
        Err(r) => r,
    }
}

/// Attempts, metered usage and callback deliveries: what changes at the end of a build
/// (and after it, as callbacks are retried).
async fn details(ui: &UiState, task: &WorkTask) -> Result<Markup, Response> {
    let store = &ui.services.store;
    let unavailable =
        |e: rdev_core::StoreError| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response();
    let attempts = store.attempts(task.id).await.map_err(unavailable)?;
    let usage = TaskUsage::of(store.task_usage(task.id).await.map_err(unavailable)?);
    let callbacks = store.outbox_for_task(task.id).await.map_err(unavailable)?;
    // While a delivery is still owed, look again now and then (one small read per page).
    let pending = callbacks
        .iter()
        .any(|c| c.delivered_at.is_none() && c.expired_at.is_none());
    Ok(html! {
        h2 #h-details { "Attempts" }
        (attempts_table(&attempts))
        h2 { "Cost and tokens" }
        (usage_table(&usage))
        h2 { "Callbacks" }
        div #callbacks hx-get=[pending.then(|| format!("/ui/builds/{}/details", task.id))]
            hx-trigger=[pending.then_some("every 5s")] hx-target="#details" hx-swap="innerHTML" {
            (callbacks_table(&callbacks, task.spec.callback_url.is_some()))
        }
    })
}

fn attempts_table(attempts: &[AttemptRecord]) -> Markup {
    html! {
        @if attempts.is_empty() { p.muted { "Not started yet." } } @else {
            table.rows {
                thead { tr { th { "#" } th { "Outcome" } th { "Worker" } th { "Started" } th { "Took" } th { "Error" } } }
                tbody { @for a in attempts { tr {
                    td data-label="Attempt" { (a.attempt) }
                    td data-label="Outcome" { (a.outcome) }
                    td data-label="Worker" { code { (a.worker) } }
                    td data-label="Started" { (layout::time(a.started_at)) }
                    td data-label="Took" { (layout::between(a.started_at, a.finished_at.unwrap_or_else(Utc::now))) }
                    td data-label="Error" { (a.error.as_deref().unwrap_or("")) }
                } } }
            }
        }
    }
}

fn usage_table(usage: &TaskUsage) -> Markup {
    html! {
        @if usage.by_attempt.is_empty() { p.muted { "No model calls metered yet." } } @else {
            table.rows {
                thead { tr { th { "Attempt" } th { "Model" } th { "Calls" } th { "Input" } th { "Output" } th { "Cache read" } th { "Cost" } } }
                tbody {
                    @for r in &usage.by_attempt { tr {
                        td data-label="Attempt" { (r.attempt) }
                        td data-label="Model" { code { (r.model) } }
                        td data-label="Calls" { (r.calls) }
                        td data-label="Input" { (layout::count(r.usage.input_tokens)) }
                        td data-label="Output" { (layout::count(r.usage.output_tokens)) }
                        td data-label="Cache read" { (layout::count(r.usage.cache_read_input_tokens)) }
                        td data-label="Cost" { (layout::usd(r.cost_usd)) }
                    } }
                    tr { td data-label="Total" colspan="2" { strong { "Total" } } td data-label="Calls" { (usage.total.calls) }
                        td data-label="Input" { (layout::count(usage.total.usage.input_tokens)) }
                        td data-label="Output" { (layout::count(usage.total.usage.output_tokens)) }
                        td data-label="Cache read" { (layout::count(usage.total.usage.cache_read_input_tokens)) }
                        td data-label="Cost" { strong { (layout::usd(usage.total.cost_usd)) } } }
                }
            }
        }
    }
}

/// The HTTP status a failed delivery got, from the dispatcher's `receiver answered NNN: …`.
pub fn http_status(last_error: &str) -> Option<u16> {
    let rest = last_error.strip_prefix("receiver answered ")?;
    rest.get(..3)?.parse().ok()
}

fn callbacks_table(rows: &[OutboxRow], asked: bool) -> Markup {
    html! {
        @if rows.is_empty() {
            p.muted { @if asked { "The callback is sent when the build ends." } @else { "This build asked for no callback." } }
        } @else {
            table.rows #callback-table {
                thead { tr { th { "URL" } th { "State" } th { "HTTP status" } th { "Attempts" } th { "Next retry" } th { "Last error" } } }
                tbody { @for c in rows {
                    @let code = c.last_error.as_deref().and_then(http_status);
                    tr {
                        td data-label="URL" { code.wrap { (c.url) } }
                        td data-label="State" class="cb-state" {
                            @if c.delivered_at.is_some() { span.badge.s-completed { "delivered" } }
                            @else if c.expired_at.is_some() { span.badge.s-failed { "gave up" } }
                            @else if c.attempts > 0 { span.badge.s-failed { "failing" } }
                            @else { span.badge.s-queued { "pending" } }
                        }
                        td data-label="HTTP status" class="cb-http" {
                            @match (code, c.delivered_at) { (Some(s), _) => (s), (None, Some(_)) => "2xx", _ => "–" }
                        }
                        td data-label="Attempts" { (c.attempts) }
                        td data-label="Next retry" {
                            @if c.delivered_at.is_none() && c.expired_at.is_none() { (layout::time(c.next_attempt_at)) } @else { "–" }
                        }
                        td data-label="Last error" { (c.last_error.as_deref().unwrap_or("")) }
                    }
                } }
            }
        }
    }
}

async fn cancel(State(ui): State<UiState>, viewer: Viewer, Path(id): Path<String>) -> Response {
    act(&ui, &viewer, &id, "cancel").await
}

async fn retry(State(ui): State<UiState>, viewer: Viewer, Path(id): Path<String>) -> Response {
    act(&ui, &viewer, &id, "retry").await
}

/// Sends `POST /tasks/{id}/{verb}` as the viewer; back to the build (or to its retry).
async fn act(ui: &UiState, viewer: &Viewer, id: &str, verb: &str) -> Response {
    let task = match load(ui, viewer, id).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let path = format!("/tasks/{}/{verb}", task.id);
    match api_client::call(ui, viewer, Method::POST, &path, None).await {
        Ok((_, body)) => {
            let next = body["task_id"]
                .as_str()
                .map_or(task.id.to_string(), str::to_owned);
            Redirect::to(&format!("/ui/builds/{next}")).into_response()
        }
        Err(e) => (
            StatusCode::CONFLICT,
            layout::error_page(
                Some(viewer),
                &format!("Could not {verb} the build"),
                &e.message,
            ),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_receivers_status_is_read_from_the_delivery_error() {
        assert_eq!(http_status("receiver answered 500: boom"), Some(500));
        assert_eq!(http_status("request failed: could not connect"), None);
    }
}
