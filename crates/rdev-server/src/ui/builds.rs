//! The builds list (`/ui/builds`): header figures (queued, running, succeeded and failed in
//! the last 24 hours, cost today) and the newest builds, filterable by project and status,
//! kept current over SSE (`/ui/builds/live`): the node's [`BoardWatch`] polls once for
//! everyone and each open page re-reads its own filtered page only when something changed.
//!
//! It must not show a task of a project the viewer's token is not limited to.
//!
//! [`BoardWatch`]: crate::live::BoardWatch

use std::convert::Infallible;

use axum::{
    extract::{Query, State},
    response::{
        sse::{Event, KeepAlive, Sse},
        Html, IntoResponse, Response,
    },
    routing::get,
    Router,
};
use chrono::{Duration as Span, Utc};
use futures::Stream;
use maud::{html, Markup};
use rdev_core::{ProjectName, StoreError, TaskFilter, TaskId, TaskStatus, WorkTask};
use serde::Deserialize;

use super::{
    layout::{self, Section},
    session::Viewer,
    UiState,
};

/// Builds per page.
const PAGE: u32 = 50;
/// The most tasks a header figure counts (shown as "500+" beyond).
const FIGURE_CAP: u32 = 500;

/// The list routes.
pub fn router() -> Router<UiState> {
    Router::new()
        .route("/ui/builds", get(list_page))
        .route("/ui/builds/live", get(live))
}

/// The list's filters, from the query string.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    project: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    before: String,
}

impl ListQuery {
    fn query_string(&self) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("project", &self.project)
            .append_pair("status", &self.status)
            .append_pair("before", &self.before)
            .finish()
    }

    /// The store filter for `viewer`; `None` when the filter names a project the viewer
    /// may not see (the page then shows nothing rather than an error).
    fn filter(&self, viewer: &Viewer) -> Option<TaskFilter> {
        let project = match self.project.as_str() {
            "" => None,
            p => Some(ProjectName::parse(p).ok()?),
        };
        if project.as_ref().is_some_and(|p| !viewer.sees(p)) {
            return None;
        }
        Some(TaskFilter {
            project,
            projects: viewer.grant.project_limit().map(<[_]>::to_vec),
            status: self.status.parse::<TaskStatus>().ok(),
            before: self.before.parse::<TaskId>().ok(),
            limit: PAGE,
        })
    }
}

/// The projects the viewer may filter by.
async fn visible_projects(ui: &UiState, viewer: &Viewer) -> Result<Vec<ProjectName>, StoreError> {
    Ok(ui
        .services
        .store
        .list_projects()
        .await?
        .into_iter()
        .map(|p| p.name)
        .filter(|p| viewer.sees(p))
        .collect())
}

async fn list_page(
    State(ui): State<UiState>,
    viewer: Viewer,
    Query(q): Query<ListQuery>,
) -> Response {
    let board = match board(&ui, &viewer, &q).await {
        Ok(b) => b,
        Err(e) => return store_error(&viewer, &e),
    };
    let projects = visible_projects(&ui, &viewer).await.unwrap_or_default();
    let live_url = format!("/ui/builds/live?{}", q.query_string());
    let body = html! {
        h1 { "Builds" }
        form.filters method="get" action="/ui/builds" aria-label="Filter builds" {
            div.field {
                label for="f-project" { "Project" }
                select #f-project name="project" {
                    option value="" { "All projects" }
                    @for p in &projects {
                        option value=(p) selected[p.as_str() == q.project] { (p) }
                    }
                }
            }
            div.field {
                label for="f-status" { "Status" }
                select #f-status name="status" {
                    option value="" { "Any status" }
                    @for s in TaskStatus::ALL {
                        option value=(s.as_str()) selected[s.as_str() == q.status] { (s.as_str()) }
                    }
                }
            }
            button type="submit" { "Filter" }
        }
        div #board hx-ext="sse" sse-connect=(live_url) sse-swap="list" aria-live="polite" {
            (board)
        }
    };
    layout::page("Builds", Some(&viewer), Some(Section::Builds), body).into_response()
}

/// The figures and the table: what a change re-renders.
async fn board(ui: &UiState, viewer: &Viewer, q: &ListQuery) -> Result<Markup, StoreError> {
    let figures = figures(ui, viewer).await?;
    let tasks = match q.filter(viewer) {
        Some(f) => ui.services.store.list(&f).await?,
        None => Vec::new(),
    };
    let older = (tasks.len() as u32 == PAGE).then(|| {
        let mut next = q.clone();
        next.before = tasks.last().map(|t| t.id.to_string()).unwrap_or_default();
        format!("/ui/builds?{}", next.query_string())
    });
    Ok(html! {
        h2 { "At a glance" }
        (figures)
        h2 { "Newest builds" }
        @if tasks.is_empty() {
            p.muted { "No builds match." }
        } @else {
            (table(&tasks))
        }
        @if let Some(href) = older { p { a href=(href) { "Older builds" } } }
    })
}

/// The builds as a table that stacks on narrow screens.
pub fn table(tasks: &[WorkTask]) -> Markup {
    html! {
        table.rows {
            thead { tr { th { "Build" } th { "Project" } th { "Status" } th { "Attempt" }
                th { "Created" } th { "Duration" } th { "Cost" } } }
            tbody {
                @for t in tasks {
                    tr id=(format!("task-{}", t.id)) {
                        td data-label="Build" { a href=(format!("/ui/builds/{}", t.id)) { (layout::short(&t.id.to_string())) } }
                        td data-label="Project" { a href=(format!("/ui/projects/{}", t.project)) { (t.project) } }
                        td data-label="Status" { (layout::status(t.status)) }
                        td data-label="Attempt" { (t.attempt) }
                        td data-label="Created" { (layout::time(t.created_at)) }
                        td data-label="Duration" {
                            @match (t.started_at, t.finished_at) {
                                (Some(s), Some(f)) => (layout::between(s, f)),
                                (Some(s), None) => { (layout::between(s, Utc::now())) " so far" }
                                _ => "–",
                            }
                        }
                        td data-label="Cost" {
                            (t.result.as_ref().and_then(|r| r.cost_usd).map_or("–".to_owned(), layout::usd))
                        }
                    }
                }
            }
        }
    }
}

/// The header figures over the tasks the viewer may see.
async fn figures(ui: &UiState, viewer: &Viewer) -> Result<Markup, StoreError> {
    let store = &ui.services.store;
    let projects = viewer.grant.project_limit().map(<[_]>::to_vec);
    let of = |status| TaskFilter {
        projects: projects.clone(),
        status: Some(status),
        limit: FIGURE_CAP,
        ..TaskFilter::default()
    };
    let now = Utc::now();
    let day_ago = now - Span::hours(24);
    let midnight = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map_or(now, |m| m.and_utc());
    let queued = store.list(&of(TaskStatus::Queued)).await?.len();
    let running = store.list(&of(TaskStatus::Running)).await?.len();
    let mut cost_today = 0.0;
    let mut recent = |tasks: Vec<WorkTask>| {
        let mut n = 0;
        for t in tasks {
            let Some(f) = t.finished_at else { continue };
            if f >= midnight {
                cost_today += t.result.as_ref().and_then(|r| r.cost_usd).unwrap_or(0.0);
            }
            if f >= day_ago {
                n += 1;
            }
        }
        n
    };
    let succeeded = recent(store.list(&of(TaskStatus::Completed)).await?);
    let failed = recent(store.list(&of(TaskStatus::Failed)).await?);
    recent(store.list(&of(TaskStatus::Cancelled)).await?);
    let capped = |n: usize| {
        if n as u32 >= FIGURE_CAP {
            format!("{FIGURE_CAP}+")
        } else {
            n.to_string()
        }
    };
    Ok(html! {
        dl.figures {
            div { dt { "Queued" } dd #fig-queued { (capped(queued)) } }
            div { dt { "Running" } dd #fig-running { (capped(running)) } }
            div { dt { "Succeeded (24 h)" } dd #fig-succeeded { (capped(succeeded)) } }
            div { dt { "Failed (24 h)" } dd #fig-failed { (capped(failed)) } }
            div { dt { "Cost today (UTC)" } dd #fig-cost { (layout::usd(cost_today)) } }
        }
    })
}

/// SSE: the re-rendered board (`list` events) whenever the node's task list changed.
async fn live(
    State(ui): State<UiState>,
    viewer: Viewer,
    Query(q): Query<ListQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut changes = ui.services.live.board.subscribe();
    let stream = async_stream::stream! {
        while changes.changed().await.is_ok() {
            match board(&ui, &viewer, &q).await {
                Ok(markup) => yield Ok(Event::default().event("list").data(markup.into_string())),
                Err(e) => tracing::warn!(error = %e, "could not render the live build list"),
            }
        }
    };
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// A page saying the store failed.
pub fn store_error(viewer: &Viewer, e: &StoreError) -> Response {
    let status = match e {
        StoreError::NotFound { .. } => axum::http::StatusCode::NOT_FOUND,
        _ => axum::http::StatusCode::SERVICE_UNAVAILABLE,
    };
    let title = if status == axum::http::StatusCode::NOT_FOUND {
        "Not found"
    } else {
        "Unavailable"
    };
    let page: Html<String> = layout::error_page(Some(viewer), title, &e.to_string());
    (status, page).into_response()
}
