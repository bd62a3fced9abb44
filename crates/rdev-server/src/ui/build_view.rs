//! How a build looks, shared by the page (`build_page`, first render) and its live stream
//! (`build_live`, fragments): the status panel with its cancel and retry buttons, one line
//! per agent event worth showing (messages, tool calls with their target, errors), and the
//! timeline of rdev's steps with their durations.
//!
//! It must not read the store: it renders what it is given.

use chrono::Utc;
use maud::{html, Markup};
use rdev_core::{Action, TaskEvent, WorkTask};
use serde_json::Value;

use super::{layout, session::Viewer};

/// Longest text shown for one message or error line.
const LINE_CHARS: usize = 600;

/// The status panel: what `summary` events replace.
pub fn summary(t: &WorkTask, viewer: &Viewer) -> Markup {
    let result = t.result.as_ref();
    let artifacts = result.map(|r| &r.artifacts);
    let pipeline = result.and_then(|r| r.agent.pipeline.as_ref());
    let usage = result.and_then(|r| r.usage.as_ref());
    html! {
        h2 #h-summary { "Status" }
        dl.facts.card {
            dt { "Status" } dd #build-status data-status=(t.status.as_str()) { (layout::status(t.status)) }
            dt { "Attempt" } dd { (t.attempt) }
            dt { "Created" } dd { (layout::time(t.created_at)) }
            @if let Some(s) = t.started_at { dt { "Started" } dd { (layout::time(s)) } }
            @if let Some(f) = t.finished_at {
                dt { "Finished" } dd { (layout::time(f)) @if let Some(s) = t.started_at { " (" (layout::between(s, f)) ")" } }
            }
            @if let Some(p) = &t.spec.provider { dt { "Provider" } dd { (p) } }
            dt { "Cost" } dd #build-cost { (result.and_then(|r| r.cost_usd).map_or("–".to_owned(), layout::usd)) }
            @if let Some(u) = usage {
                dt { "Tokens" } dd { (layout::count(u.total.usage.total_tokens())) " in " (u.total.calls) " model calls" }
            }
            @if let Some(sha) = artifacts.and_then(|a| a.commit_sha.as_deref()) {
                dt { "Pushed commit" } dd { code.wrap { (sha) } }
            }
            @if let Some(url) = artifacts.and_then(|a| a.deploy_url.as_deref()) {
                dt { "Deployed at" } dd { a.wrap href=(url) rel="noopener noreferrer" { (url) } }
            }
            @if let Some(p) = pipeline {
                dt { "Pipeline" } dd { "#" (p.number) " " (p.status) }
            }
            @if let Some(e) = &t.error { dt { "Error" } dd.error { (e) } }
            @if let Some(r) = t.retry_of { dt { "Retry of" } dd { a href=(format!("/ui/builds/{r}")) { (layout::short(&r.to_string())) } } }
        }
        @if let Some(out) = result.map(|r| r.output.as_str()).filter(|o| !o.is_empty()) {
            h3 { "Output" }
            pre.card { (out) }
        }
        (actions(t, viewer))
    }
}

/// Cancel (queued or running) and retry (failed or cancelled), as the grant allows.
fn actions(t: &WorkTask, viewer: &Viewer) -> Markup {
    use rdev_core::TaskStatus as S;
    let cancel =
        matches!(t.status, S::Queued | S::Running) && viewer.can(Action::Cancel, Some(&t.project));
    let retry =
        matches!(t.status, S::Failed | S::Cancelled) && viewer.can(Action::Build, Some(&t.project));
    html! {
        @if cancel || retry {
            div.actions {
                @if cancel {
                    form method="post" action=(format!("/ui/builds/{}/cancel", t.id)) {
                        button.danger #cancel-build type="submit" { "Cancel build" }
                    }
                }
                @if retry {
                    form method="post" action=(format!("/ui/builds/{}/retry", t.id)) {
                        button #retry-build type="submit" { "Retry build" }
                    }
                }
            }
        }
    }
}

fn clip(text: &str) -> String {
    let mut out: String = text.chars().take(LINE_CHARS).collect();
    if text.chars().count() > LINE_CHARS {
        out.push('…');
    }
    out
}

/// What a tool call is about: its path, command, pattern or URL, else its first string.
pub fn tool_target(input: &Value) -> Option<String> {
    const KEYS: [&str; 7] = [
        "file_path",
        "path",
        "command",
        "pattern",
        "url",
        "query",
        "description",
    ];
    let obj = input.as_object()?;
    KEYS.iter()
        .find_map(|k| obj.get(*k).and_then(Value::as_str))
        .or_else(|| obj.values().find_map(Value::as_str))
        .map(|s| clip(s.lines().next().unwrap_or("")))
}

/// One line of the agent's events, or `None` for events not worth a line (usage,
/// successful tool results, raw provider events, rdev's own progress steps).
pub fn event_line(ev: &TaskEvent) -> Option<Markup> {
    let p = &ev.payload;
    let text = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("");
    let (class, kind, body): (&str, &str, Markup) = match ev.kind.as_str() {
        "message" if !text("text").trim().is_empty() => (
            "k-message",
            "says",
            html! { pre { (clip(text("text").trim())) } },
        ),
        "tool_use" => {
            let target = p.get("input").and_then(tool_target);
            (
                "k-tool_use",
                "tool",
                html! {
                    strong.tool-name { (text("name")) }
                    @if let Some(t) = target { " " code.wrap.tool-target { (t) } }
                },
            )
        }
        "tool_result" if p.get("is_error").and_then(Value::as_bool) == Some(true) => (
            "k-tool_error",
            "failed",
            html! { pre { (clip(text("output"))) } },
        ),
        "error" => (
            "k-error",
            "error",
            html! { pre { (clip(text("message"))) } },
        ),
        "started" => (
            "k-started",
            "start",
            html! {
                "agent started" @if let Some(m) = p.get("model").and_then(Value::as_str) { " (" (m) ")" }
            },
        ),
        "completed" => (
            "k-completed",
            "done",
            html! {
                "agent finished" @if let Some(s) = p.get("status").and_then(Value::as_str) { ": " (s) }
            },
        ),
        _ => return None,
    };
    Some(html! {
        li id=(format!("ev-{}", ev.seq)) class=(class) {
            span.kind { (kind) }
            span.body { (body) }
        }
    })
}

/// rdev's steps (its `progress` events) with how long each took: until the next step,
/// or the end of the build, or now while it runs.
pub fn timeline(events: &[TaskEvent], task: &WorkTask) -> Markup {
    let steps: Vec<&TaskEvent> = events.iter().filter(|e| e.kind == "progress").collect();
    html! {
        @if steps.is_empty() {
            p.muted { @if task.status.is_terminal() { "No steps were recorded." } @else { "Waiting for a worker." } }
        } @else {
            ol.timeline {
                @for (i, step) in steps.iter().enumerate() {
                    @let name = step.payload.get("step").and_then(Value::as_str).unwrap_or("step");
                    @let end = steps.get(i + 1).map(|n| n.at).or(task.finished_at);
                    li data-step=(name) {
                        span { strong { (name.replace('_', " ")) }
                            @if let Some(a) = step.payload.get("attempt").and_then(Value::as_u64) { " (attempt " (a) ")" } }
                        span.muted {
                            (layout::clock(step.at)) " · "
                            @match end {
                                Some(e) => (layout::between(step.at, e)),
                                None => { (layout::between(step.at, Utc::now())) " so far" }
                            }
                        }
                    }
                }
                @if let Some(f) = task.finished_at {
                    li data-step="end" { span { strong { "ended: " (task.status.as_str()) } } span.muted { (layout::clock(f)) } }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use rdev_core::TaskId;

    use super::*;

    fn ev(kind: &str, payload: Value) -> TaskEvent {
        TaskEvent {
            task_id: TaskId::new(),
            seq: 1,
            at: Utc::now(),
            kind: kind.into(),
            payload,
        }
    }

    #[test]
    fn a_tool_call_is_one_line_with_its_target() {
        let line = event_line(&ev(
            "tool_use",
            json!({"name": "Write", "input": {"file_path": "/w/index.html", "content": "<h1>"}}),
        ))
        .unwrap()
        .into_string();
        assert!(line.contains("Write"), "{line}");
        assert!(line.contains("/w/index.html"), "{line}");
        assert!(!line.contains("<h1>"), "content is not the target: {line}");
        assert!(event_line(&ev("usage", json!({}))).is_none());
        assert!(event_line(&ev("progress", json!({"step": "agent"}))).is_none());
        let err = event_line(&ev("error", json!({"message": "<b>x</b>"})))
            .unwrap()
            .into_string();
        assert!(err.contains("&lt;b&gt;"), "escaped: {err}");
    }
}
