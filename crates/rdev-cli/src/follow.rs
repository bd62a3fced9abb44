//! A task's events as a CI log, for `rdev build --follow` and `rdev task logs`: one line per
//! step with how long it took (`prepare 0.4s`, `push 3f9c1a2 0.3s`, `ci #42 success 35.0s`),
//! the agent's tool calls indented under it with their target (the file for Write, Edit and
//! Read, the command for Bash), then the final status, artifacts and result. Durations come
//! from the events' server timestamps, so replaying a finished task prints the same log. It
//! only formats; reading the stream and choosing the exit code belong to `build_cmd`.

use chrono::{DateTime, Utc};
use rdev_core::{AgentEvent, AgentResult, AgentStatus, BuildResult};
use serde::Deserialize;
use serde_json::Value;

/// Longest command or other tool target shown, in characters.
const TARGET_CHARS: usize = 80;

/// One stored event as `GET /tasks/{id}/events` sends it.
#[derive(Debug, Deserialize)]
pub struct StoredEvent {
    /// When the server stored it.
    pub at: Option<DateTime<Utc>>,
    pub kind: String,
    #[serde(default)]
    pub payload: Value,
}

/// A progress note the worker stores between the agent's events (`kind = "progress"`).
#[derive(Debug, Deserialize)]
struct Progress {
    step: String,
    attempt: Option<u32>,
    commit_sha: Option<String>,
    template: Option<String>,
    provider: Option<String>,
    pipeline: Option<u64>,
    status: Option<String>,
}

/// The fields of `GET /tasks/{id}` the log's last lines use.
#[derive(Debug, Default, Deserialize)]
pub struct FinishedTask {
    pub status: String,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub result: Option<BuildResult>,
}

/// A step that has begun and is printed, with its duration, when the next one begins.
#[derive(Debug)]
struct Open {
    label: String,
    since: Option<DateTime<Utc>>,
    /// Printed after the duration (the agent's turns and cost).
    detail: String,
}

/// The log of one task, fed event by event.
#[derive(Debug)]
pub struct CiLog {
    task_id: String,
    open: Option<Open>,
}

impl CiLog {
    /// A log for task `task_id` (its checkout's path is cut from file targets).
    pub fn new(task_id: &str) -> Self {
        Self {
            task_id: task_id.to_owned(),
            open: None,
        }
    }

    /// The lines `ev` adds to the log (often none).
    pub fn event(&mut self, ev: &StoredEvent) -> Vec<String> {
        let mut out = Vec::new();
        if ev.kind == "progress" {
            if let Ok(p) = serde_json::from_value::<Progress>(ev.payload.clone()) {
                self.progress(p, ev.at, &mut out);
            }
            return out;
        }
        let Ok(agent) = serde_json::from_value::<AgentEvent>(ev.payload.clone()) else {
            return out;
        };
        match agent {
            AgentEvent::ToolUse { name, input, .. } => {
                let target = self.tool_target(&name, &input);
                out.push(format!("  {name}{}", prefixed(" ", target)));
            }
            AgentEvent::ToolResult {
                output,
                is_error: true,
                ..
            } => out.push(format!("  ✗ {}", short(&output, TARGET_CHARS))),
            AgentEvent::Error { message } => {
                out.push(format!("  ! {}", short(&message, TARGET_CHARS * 2)))
            }
            AgentEvent::Completed(result) => {
                let (label, detail) = agent_summary(&result);
                self.open = Some(Open {
                    label,
                    since: self.open.take().and_then(|o| o.since),
                    detail,
                });
                self.close(ev.at, &mut out);
            }
            _ => {}
        }
        out
    }

    /// The last lines once the task has ended: the open step, the status with the run's
    /// duration, then the commit, deploy URL and output of a completed task (a failed
    /// task's error is the caller's to report).
    pub fn finish(&mut self, task: &FinishedTask) -> Vec<String> {
        let mut out = Vec::new();
        self.close(task.finished_at, &mut out);
        out.push(format!(
            "{}{}",
            task.status,
            prefixed(" ", elapsed(task.started_at, task.finished_at))
        ));
        if let Some(result) = task.result.as_ref().filter(|_| task.status == "completed") {
            if let Some(sha) = &result.artifacts.commit_sha {
                out.push(format!("commit {sha}"));
            }
            if let Some(url) = &result.artifacts.deploy_url {
                out.push(format!("deployed to {url}"));
            }
            let output = result.output.trim();
            if !output.is_empty() {
                out.push(output.to_owned());
            }
        }
        out
    }

    fn progress(&mut self, p: Progress, at: Option<DateTime<Utc>>, out: &mut Vec<String>) {
        let sha = p.commit_sha.as_deref().map(short_sha).unwrap_or_default();
        let label = match p.step.as_str() {
            "prepare" => match p.attempt {
                Some(n) if n > 1 => format!("prepare (attempt {n})"),
                _ => "prepare".to_owned(),
            },
            "render_template" => format!("template {}", p.template.unwrap_or_default()),
            "already_pushed" => format!("already pushed {sha}"),
            "push" => format!("push {sha}"),
            "ci" => "ci".to_owned(),
            "ci_finished" => {
                // Ends the `ci` step with what the pipeline did.
                if let Some(open) = &mut self.open {
                    open.label = format!(
                        "ci #{} {}",
                        p.pipeline.map(|n| n.to_string()).unwrap_or_default(),
                        p.status.unwrap_or_default()
                    );
                }
                self.close(at, out);
                return;
            }
            "agent" => {
                self.close(at, out);
                // The agent's step has lines of its own, so it is announced when it starts.
                out.push(format!(
                    "agent{}",
                    prefixed(" ", p.provider.unwrap_or_default())
                ));
                self.open = Some(Open {
                    label: "agent".to_owned(),
                    since: at,
                    detail: String::new(),
                });
                return;
            }
            other => other.replace('_', " "),
        };
        self.close(at, out);
        self.open = Some(Open {
            label: label.trim_end().to_owned(),
            since: at,
            detail: String::new(),
        });
    }

    /// Prints the open step with its duration up to `at`.
    fn close(&mut self, at: Option<DateTime<Utc>>, out: &mut Vec<String>) {
        if let Some(open) = self.open.take() {
            out.push(format!(
                "{}{}{}",
                open.label,
                prefixed(" ", elapsed(open.since, at)),
                open.detail
            ));
        }
    }

    /// What a tool call works on: a file (relative to the checkout), a command, a pattern.
    fn tool_target(&self, name: &str, input: &Value) -> String {
        let field = |keys: &[&str]| {
            keys.iter()
                .find_map(|k| input.get(*k).and_then(Value::as_str))
                .map(str::to_owned)
        };
        let target = match name.to_ascii_lowercase().as_str() {
            "write" | "edit" | "multiedit" | "read" | "notebookedit" | "list" | "ls" => {
                field(&["file_path", "filePath", "notebook_path", "path"])
                    .map(|p| self.in_checkout(&p))
            }
            "bash" => field(&["command"]),
            "glob" | "grep" => field(&["pattern"]),
            "webfetch" => field(&["url"]),
            "websearch" => field(&["query"]),
            _ => field(&["file_path", "filePath", "command", "description"]),
        };
        target.map(|t| short(&t, TARGET_CHARS)).unwrap_or_default()
    }

    /// `path` below the task's checkout (a directory named after the task) as a relative
    /// path; any other path as it is.
    fn in_checkout(&self, path: &str) -> String {
        let mut parts = path.split('/');
        if parts.any(|segment| segment.contains(&self.task_id)) {
            let rest: Vec<&str> = parts.collect();
            if !rest.is_empty() {
                return rest.join("/");
            }
        }
        path.to_owned()
    }
}

/// The agent step's closing label and detail: `agent success`, ` · 3 turns · $0.29`.
fn agent_summary(r: &AgentResult) -> (String, String) {
    let status = match r.status {
        AgentStatus::Success => "success",
        AgentStatus::Failed => "failed",
        AgentStatus::Cancelled => "cancelled",
        AgentStatus::TimedOut => "timed out",
    };
    let mut detail = String::new();
    if r.num_turns > 0 {
        detail.push_str(&format!(
            " · {} turn{}",
            r.num_turns,
            if r.num_turns == 1 { "" } else { "s" }
        ));
    }
    if let Some(cost) = r.cost_usd {
        detail.push_str(&format!(" · ${cost:.2}"));
    }
    (format!("agent {status}"), detail)
}

/// `to - from` as `0.4s`, `12.3s` or `2m05s`; empty when either end is unknown.
fn elapsed(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> String {
    let (Some(from), Some(to)) = (from, to) else {
        return String::new();
    };
    let ms = (to - from).num_milliseconds().max(0);
    if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        let secs = ms / 1000;
        format!("{}m{:02}s", secs / 60, secs % 60)
    }
}

/// `sep` + `s`, or nothing when `s` is empty.
fn prefixed(sep: &str, s: impl AsRef<str>) -> String {
    let s = s.as_ref();
    if s.is_empty() {
        String::new()
    } else {
        format!("{sep}{s}")
    }
}

/// The first 7 characters of a commit id.
fn short_sha(sha: &str) -> String {
    sha.chars().take(7).collect()
}

/// `s` on one line, cut to `n` characters with an ellipsis.
fn short(s: &str, n: usize) -> String {
    let one = s.trim().replace('\n', " ⏎ ");
    if one.chars().count() > n {
        format!("{}…", one.chars().take(n).collect::<String>())
    } else {
        one
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const TASK: &str = "0193aaaa-bbbb-7ccc-8ddd-eeeeeeeeeeee";

    /// `secs` after a fixed instant.
    fn at(secs: f64) -> Option<DateTime<Utc>> {
        let base: DateTime<Utc> = "2025-01-01T00:00:00Z".parse().unwrap();
        Some(base + chrono::Duration::milliseconds((secs * 1000.0) as i64))
    }

    fn ev(secs: f64, kind: &str, payload: Value) -> StoredEvent {
        StoredEvent {
            at: at(secs),
            kind: kind.to_owned(),
            payload,
        }
    }

    #[test]
    fn a_deployed_build_reads_like_a_ci_log() {
        let checkout = format!("/srv/rdev/data/git/work/site-{TASK}-1a2b3c4d");
        let events = [
            ev(0.0, "progress", json!({"step": "prepare", "attempt": 1})),
            ev(
                0.4,
                "progress",
                json!({"step": "render_template", "template": "astro-landing"}),
            ),
            ev(
                0.6,
                "progress",
                json!({"step": "agent", "provider": "claude-code"}),
            ),
            ev(
                1.0,
                "started",
                json!({"type": "started", "session_id": "s", "model": null, "tools": []}),
            ),
            ev(
                1.1,
                "message",
                json!({"type": "message", "role": "assistant", "text": "On it."}),
            ),
            ev(
                1.2,
                "tool_use",
                json!({"type": "tool_use", "id": "t1", "name": "Write",
                "input": {"file_path": format!("{checkout}/src/pages/pricing.astro"), "content": "x"}}),
            ),
            ev(
                1.3,
                "tool_result",
                json!({"type": "tool_result", "id": "t1", "output": "ok", "is_error": false}),
            ),
            ev(
                1.4,
                "tool_use",
                json!({"type": "tool_use", "id": "t2", "name": "Bash",
                "input": {"command": "npm run build\n&& echo done", "description": "Build"}}),
            ),
            ev(
                1.5,
                "tool_result",
                json!({"type": "tool_result", "id": "t2", "output": "exit 1", "is_error": true}),
            ),
            ev(
                1.6,
                "tool_use",
                json!({"type": "tool_use", "id": "t3", "name": "read",
                "input": {"filePath": "/etc/hosts"}}),
            ),
            ev(
                12.6,
                "completed",
                json!({"type": "completed", "status": "success", "output": "Done",
                "session_id": "s", "cost_usd": 0.414, "usage": {"input_tokens": 1, "output_tokens": 2},
                "num_turns": 3, "duration": 12000}),
            ),
            ev(
                12.8,
                "progress",
                json!({"step": "push", "commit_sha": "3f9c1a2b4d5e6f"}),
            ),
            ev(
                13.1,
                "progress",
                json!({"step": "ci", "commit_sha": "3f9c1a2b4d5e6f"}),
            ),
            ev(
                48.1,
                "progress",
                json!({"step": "ci_finished", "pipeline": 42, "status": "success"}),
            ),
        ];
        let mut log = CiLog::new(TASK);
        let mut lines: Vec<String> = events.iter().flat_map(|e| log.event(e)).collect();
        let task: FinishedTask = serde_json::from_value(json!({
            "status": "completed", "started_at": "2025-01-01T00:00:00Z",
            "finished_at": "2025-01-01T00:00:48.2Z", "error": null,
            "result": {"output": "Added the pricing section.\n",
                       "artifacts": {"commit_sha": "3f9c1a2b4d5e6f", "deploy_url": "https://site.example.com"}}
        }))
        .unwrap();
        lines.extend(log.finish(&task));
        assert_eq!(
            lines,
            [
                "prepare 0.4s",
                "template astro-landing 0.2s",
                "agent claude-code",
                "  Write src/pages/pricing.astro",
                "  Bash npm run build ⏎ && echo done",
                "  ✗ exit 1",
                "  read /etc/hosts",
                "agent success 12.0s · 3 turns · $0.41",
                "push 3f9c1a2 0.3s",
                "ci #42 success 35.0s",
                "completed 48.2s",
                "commit 3f9c1a2b4d5e6f",
                "deployed to https://site.example.com",
                "Added the pricing section.",
            ]
        );
    }

    #[test]
    fn a_failed_task_closes_its_open_step_and_shows_no_result() {
        let mut log = CiLog::new(TASK);
        let mut lines = log.event(&ev(
            0.0,
            "progress",
            json!({"step": "prepare", "attempt": 2}),
        ));
        lines.extend(log.finish(&FinishedTask {
            status: "failed".into(),
            started_at: at(0.0),
            finished_at: at(125.0),
            error: Some("git_failed".into()),
            result: None,
        }));
        assert_eq!(lines, ["prepare (attempt 2) 2m05s", "failed 2m05s"]);
    }

    #[test]
    fn long_targets_are_cut_and_unknown_events_are_skipped() {
        let mut log = CiLog::new(TASK);
        let long = "x".repeat(200);
        let lines = log.event(&ev(
            0.0,
            "tool_use",
            json!({"type": "tool_use", "id": "t", "name": "Bash", "input": {"command": long}}),
        ));
        assert_eq!(lines[0].chars().count(), "  Bash ".len() + TARGET_CHARS + 1);
        assert!(log
            .event(&ev(0.0, "raw", json!({"type": "raw", "value": 1})))
            .is_empty());
        assert!(log.event(&ev(0.0, "mystery", json!("?"))).is_empty());
    }
}
