//! The build page's live part (`/ui/builds/{id}/live`, SSE for htmx's SSE extension): the
//! task's [`TaskFeeds`] feed turned into HTML fragments: `agent` (one `<li>` per agent
//! event worth a line: messages, tool calls with their target, errors), `timeline` (rdev's
//! steps with durations, re-rendered when a step starts or the build ends), `summary` (the
//! status panel, when the task's row changes) and `end`. Also how an event becomes a line
//! and how steps become a timeline, which the page uses for its first render.
//!
//! It must not poll the store itself: everything comes from the shared feed.
//!
//! [`TaskFeeds`]: crate::live::TaskFeeds

use std::convert::Infallible;

use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
    routing::get,
    Router,
};
use futures::StreamExt;
use maud::{html, Markup};
use rdev_core::{TaskEvent, TaskId};
use serde::Deserialize;

use super::{
    build_view::{event_line, summary, timeline},
    session::Viewer,
    UiState,
};
use crate::live::FeedItem;

/// The live route.
pub fn router() -> Router<UiState> {
    Router::new().route("/ui/builds/{id}/live", get(live))
}

#[derive(Debug, Deserialize)]
struct LiveQuery {
    /// The last event the page already shows.
    #[serde(default)]
    after: i64,
}

async fn live(
    State(ui): State<UiState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(q): Query<LiveQuery>,
) -> Response {
    let Ok(id) = id.parse::<TaskId>() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let task = match ui.services.store.get(id).await {
        Ok(t) if viewer.sees(&t.project) => t,
        Ok(_) | Err(rdev_core::StoreError::NotFound { .. }) => {
            return StatusCode::NOT_FOUND.into_response()
        }
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    };
    let shown = q.after;
    // From the start, so the timeline knows every step; lines the page has are skipped.
    let mut feed = Box::pin(ui.services.live.tasks.watch(id, 0));
    let stream = async_stream::stream! {
        let mut task = task;
        let mut steps: Vec<TaskEvent> = Vec::new();
        while let Some(item) = feed.next().await {
            match item {
                FeedItem::Event(ev) => {
                    let is_step = ev.kind == "progress";
                    if is_step {
                        steps.push((*ev).clone());
                    }
                    if ev.seq <= shown {
                        continue;
                    }
                    if is_step {
                        yield frag("timeline", timeline(&steps, &task));
                    } else if let Some(line) = event_line(&ev) {
                        yield Ok::<_, Infallible>(Event::default().id(ev.seq.to_string()).event("agent").data(line.into_string()));
                    }
                }
                FeedItem::Task(t) => {
                    task = (*t).clone();
                    yield frag("summary", summary(&task, &viewer));
                    yield frag("timeline", timeline(&steps, &task));
                }
                FeedItem::End(status) => {
                    yield Ok(Event::default().event("end").data(status.as_str()));
                    break;
                }
                FeedItem::Failed(e) => {
                    yield frag("agent", html! { li.k-error { span.kind { "error" } span.body { "live view stopped: " (e) } } });
                    break;
                }
            }
        }
    };
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn frag(event: &str, markup: Markup) -> Result<Event, Infallible> {
    Ok(Event::default().event(event).data(markup.into_string()))
}
