//! Maps OpenCode's server events to rdev's [`AgentEvent`]s ([`EventMapper`]) and its
//! stored messages to the totals of a run ([`summarize`]). Verified against
//! `opencode serve` 1.18.33 (its `/doc` OpenAPI and live `/event` streams): text and tool
//! parts arrive as repeated `message.part.updated` snapshots, so the mapper remembers what
//! it already emitted. This module is pure: no I/O, no clocks, no decisions about when a
//! run ends beyond reporting idle/busy.

use std::collections::{HashMap, HashSet};

use rdev_core::{AgentEvent, Usage};
use serde_json::{json, Value};

use super::client::ServerEvent;

/// What one server event means for the run, besides the events to forward.
#[derive(Debug, Default, PartialEq)]
pub struct Mapped {
    /// Events for the consumer, in order.
    pub events: Vec<AgentEvent>,
    /// The session reported idle (`session.idle` or `session.status` idle).
    pub idle: bool,
    /// The session reported busy (it is working on a turn).
    pub busy: bool,
}

/// Per-run state of the mapping.
#[derive(Debug, Default)]
pub struct EventMapper {
    roles: HashMap<String, String>,
    tools_started: HashSet<String>,
    tools_finished: HashSet<String>,
    texts_done: HashSet<String>,
    /// Cost of each assistant message seen, by message id.
    costs: HashMap<String, f64>,
    session_error: Option<String>,
    last_text: String,
    /// User messages that existed before this run's prompt (a resumed session).
    earlier_prompts: HashSet<String>,
    prompt_admitted: bool,
}

/// Event types that carry nothing a consumer needs (snapshots of the session record,
/// streaming deltas whose final text arrives as a part update).
const IGNORED: &[&str] = &[
    "session.created",
    "session.updated",
    "session.diff",
    "message.part.delta",
    "message.part.removed",
    "message.removed",
];

impl EventMapper {
    /// A mapper for a new run.
    pub fn new() -> Self {
        Self::default()
    }

    /// A mapper for a run in a session that already has the user messages `earlier`.
    pub fn with_earlier_prompts(earlier: impl IntoIterator<Item = String>) -> Self {
        Self {
            earlier_prompts: earlier.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Whether the server has stored this run's prompt (a user message not seen before).
    /// Until then an idle report is about an earlier state and does not end the run.
    pub fn prompt_admitted(&self) -> bool {
        self.prompt_admitted
    }

    /// The first error the session reported that was not an abort.
    pub fn session_error(&self) -> Option<&str> {
        self.session_error.as_deref()
    }

    /// The last finished assistant text seen.
    pub fn last_text(&self) -> &str {
        &self.last_text
    }

    /// Cost of the assistant messages seen so far, in USD.
    pub fn cost(&self) -> f64 {
        self.costs.values().sum()
    }

    /// Number of assistant messages (model turns) seen so far.
    pub fn turns(&self) -> usize {
        self.costs.len()
    }

    /// Maps one event of this run's session.
    pub fn map(&mut self, ev: &ServerEvent) -> Mapped {
        let p = &ev.properties;
        let mut out = Mapped::default();
        match ev.kind.as_str() {
            "message.updated" => self.message_updated(p, &mut out),
            "message.part.updated" => self.part_updated(p, &mut out),
            "session.status" => match p.pointer("/status/type").and_then(Value::as_str) {
                Some("idle") => out.idle = true,
                Some("busy") => out.busy = true,
                Some("retry") => {
                    out.busy = true;
                    let attempt = p.pointer("/status/attempt").and_then(Value::as_u64);
                    let msg = str_at(p, "/status/message").unwrap_or("model request failed");
                    out.events.push(AgentEvent::Error {
                        message: format!(
                            "{msg} (opencode retries, attempt {})",
                            attempt.unwrap_or(0)
                        ),
                    });
                }
                _ => out.events.push(raw(ev)),
            },
            "session.idle" => out.idle = true,
            "session.error" => {
                if let Some(err) = p.get("error") {
                    let message = describe_error(err);
                    if !is_abort(err) && self.session_error.is_none() {
                        self.session_error = Some(message.clone());
                    }
                    out.events.push(AgentEvent::Error { message });
                }
            }
            kind if IGNORED.contains(&kind) => {}
            _ => out.events.push(raw(ev)),
        }
        out
    }

    fn message_updated(&mut self, p: &Value, out: &mut Mapped) {
        let Some(info) = p.get("info") else { return };
        let (Some(id), Some(role)) = (str_at(info, "/id"), str_at(info, "/role")) else {
            return;
        };
        self.roles.insert(id.to_owned(), role.to_owned());
        if role == "user" && !self.earlier_prompts.contains(id) {
            self.prompt_admitted = true;
        }
        if role != "assistant" {
            return;
        }
        let cost = info.get("cost").and_then(Value::as_f64).unwrap_or(0.0);
        self.costs.insert(id.to_owned(), cost);
        if let Some(err) = info.get("error") {
            // The same error also arrives as `session.error`; only report it here when the
            // message is final, once.
            if !is_abort(err) && self.session_error.is_none() {
                let message = describe_error(err);
                self.session_error = Some(message.clone());
                out.events.push(AgentEvent::Error { message });
            }
        }
    }

    fn part_updated(&mut self, p: &Value, out: &mut Mapped) {
        let Some(part) = p.get("part") else { return };
        let message_id = str_at(part, "/messageID").unwrap_or_default();
        if self.roles.get(message_id).is_some_and(|r| r != "assistant") {
            return; // the prompt itself, echoed back
        }
        match str_at(part, "/type") {
            Some(kind @ ("text" | "reasoning")) => {
                let part_id = str_at(part, "/id").unwrap_or_default();
                let finished = part.pointer("/time/end").is_some();
                let synthetic = part.get("synthetic").and_then(Value::as_bool) == Some(true);
                let text = str_at(part, "/text").unwrap_or_default();
                if finished && !synthetic && !text.is_empty() && !self.texts_done.contains(part_id)
                {
                    self.texts_done.insert(part_id.to_owned());
                    let role = if kind == "text" {
                        "assistant"
                    } else {
                        "reasoning"
                    };
                    if kind == "text" {
                        text.clone_into(&mut self.last_text);
                    }
                    out.events.push(AgentEvent::Message {
                        role: role.to_owned(),
                        text: text.to_owned(),
                    });
                }
            }
            Some("tool") => self.tool_part(part, out),
            Some("step-finish") => {
                if let Some(tokens) = part.get("tokens") {
                    out.events.push(AgentEvent::Usage(usage_of(tokens)));
                }
            }
            Some("step-start" | "snapshot" | "patch" | "compaction") => {}
            _ => out.events.push(AgentEvent::Raw {
                value: json!({"type": "message.part.updated", "part": part}),
            }),
        }
    }

    fn tool_part(&mut self, part: &Value, out: &mut Mapped) {
        let Some(call_id) = str_at(part, "/callID") else {
            return;
        };
        let name = str_at(part, "/tool").unwrap_or("unknown");
        let status = str_at(part, "/state/status").unwrap_or("pending");
        if status == "pending" {
            return; // the input is still being streamed
        }
        // Tool parts are re-sent as whole snapshots many times; only the first is news.
        if !self.tools_started.contains(call_id) {
            self.tools_started.insert(call_id.to_owned());
            out.events.push(AgentEvent::ToolUse {
                id: call_id.to_owned(),
                name: name.to_owned(),
                input: part.pointer("/state/input").cloned().unwrap_or(Value::Null),
            });
        }
        let (output, is_error) = match status {
            "completed" => (str_at(part, "/state/output").unwrap_or_default(), false),
            "error" => (str_at(part, "/state/error").unwrap_or("tool failed"), true),
            _ => return,
        };
        if !self.tools_finished.contains(call_id) {
            self.tools_finished.insert(call_id.to_owned());
            out.events.push(AgentEvent::ToolResult {
                id: call_id.to_owned(),
                output: output.to_owned(),
                is_error,
            });
        }
    }
}

/// Totals of one run, read from the session's stored messages.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Text of the last assistant message.
    pub output: String,
    /// Sum of the assistant messages' costs.
    pub cost_usd: f64,
    /// Sum of their token counts.
    pub usage: Usage,
    /// Number of assistant messages.
    pub turns: u32,
    /// The last assistant message's error, unless it was an abort.
    pub error: Option<String>,
    /// The last assistant message ended by an abort.
    pub aborted: bool,
}

/// Sums the assistant messages that answer the last user message in `messages` (the
/// `GET /session/{id}/message` list, oldest first): the turns of the latest prompt only,
/// so a resumed session does not count earlier runs.
pub fn summarize(messages: &[Value]) -> Summary {
    let role = |m: &Value| str_at(m, "/info/role").map(str::to_owned);
    let last_user = messages
        .iter()
        .rev()
        .find(|m| role(m).as_deref() == Some("user"))
        .and_then(|m| str_at(m, "/info/id"));
    let answers: Vec<&Value> = messages
        .iter()
        .filter(|m| role(m).as_deref() == Some("assistant"))
        .filter(|m| last_user.is_none() || str_at(m, "/info/parentID") == last_user)
        .collect();
    let mut s = Summary {
        turns: u32::try_from(answers.len()).unwrap_or(u32::MAX),
        ..Summary::default()
    };
    for m in &answers {
        s.cost_usd += m
            .pointer("/info/cost")
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        if let Some(tokens) = m.pointer("/info/tokens") {
            let u = usage_of(tokens);
            s.usage.input_tokens += u.input_tokens;
            s.usage.output_tokens += u.output_tokens;
            s.usage.cache_read_input_tokens += u.cache_read_input_tokens;
            s.usage.cache_creation_input_tokens += u.cache_creation_input_tokens;
        }
    }
    if let Some(last) = answers.last() {
        s.output = last
            .get("parts")
            .and_then(Value::as_array)
            .map(|parts| {
                parts
                    .iter()
                    .filter(|p| str_at(p, "/type") == Some("text"))
                    .filter(|p| p.get("synthetic").and_then(Value::as_bool) != Some(true))
                    .filter_map(|p| str_at(p, "/text"))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default();
        if let Some(err) = last.pointer("/info/error") {
            if is_abort(err) {
                s.aborted = true;
            } else {
                s.error = Some(describe_error(err));
            }
        }
    }
    s
}

/// Token counts in OpenCode's `{input, output, reasoning, cache:{read, write}}` shape;
/// reasoning tokens are billed as output.
fn usage_of(tokens: &Value) -> Usage {
    let n = |ptr: &str| {
        tokens
            .pointer(ptr)
            .and_then(Value::as_f64)
            .map_or(0, |f| f.max(0.0) as u64)
    };
    Usage {
        input_tokens: n("/input"),
        output_tokens: n("/output") + n("/reasoning"),
        cache_read_input_tokens: n("/cache/read"),
        cache_creation_input_tokens: n("/cache/write"),
    }
}

/// `Name: message` from OpenCode's `{name, data:{message}}` error shape.
pub fn describe_error(err: &Value) -> String {
    let name = str_at(err, "/name").unwrap_or("Error");
    match str_at(err, "/data/message") {
        Some(msg) => format!("{name}: {}", super::client::snippet(msg)),
        None => name.to_owned(),
    }
}

/// Whether an error is OpenCode's report of an abort (ours or someone else's).
fn is_abort(err: &Value) -> bool {
    str_at(err, "/name") == Some("MessageAbortedError")
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

fn raw(ev: &ServerEvent) -> AgentEvent {
    AgentEvent::Raw {
        value: json!({"type": ev.kind, "properties": ev.properties}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str, properties: Value) -> ServerEvent {
        ServerEvent {
            kind: kind.to_owned(),
            properties,
        }
    }

    fn tool(status: Value) -> ServerEvent {
        ev(
            "message.part.updated",
            json!({"sessionID":"s","part":{"id":"p1","messageID":"m2","sessionID":"s","type":"tool",
                   "callID":"call_1","tool":"write","state":status}}),
        )
    }

    #[test]
    fn a_tool_part_becomes_one_use_and_one_result_across_snapshots() {
        let mut m = EventMapper::new();
        assert!(m
            .map(&tool(json!({"status":"pending","input":{}})))
            .events
            .is_empty());
        let input = json!({"filePath":"/w/a.txt","content":"hi"});
        let running = m.map(&tool(json!({"status":"running","input":input})));
        assert_eq!(
            running.events,
            vec![AgentEvent::ToolUse {
                id: "call_1".into(),
                name: "write".into(),
                input: input.clone()
            }]
        );
        let done = json!({"status":"completed","input":input,"output":"Wrote file successfully."});
        let first = m.map(&tool(done.clone()));
        assert_eq!(
            first.events,
            vec![AgentEvent::ToolResult {
                id: "call_1".into(),
                output: "Wrote file successfully.".into(),
                is_error: false
            }]
        );
        assert!(
            m.map(&tool(done)).events.is_empty(),
            "repeated snapshot emits nothing"
        );
    }

    #[test]
    fn a_tool_seen_only_as_failed_still_gets_its_use_first() {
        let mut m = EventMapper::new();
        let out = m.map(&tool(
            json!({"status":"error","input":{"command":"x"},"error":"boom"}),
        ));
        assert!(matches!(out.events[0], AgentEvent::ToolUse { .. }));
        assert_eq!(
            out.events[1],
            AgentEvent::ToolResult {
                id: "call_1".into(),
                output: "boom".into(),
                is_error: true
            }
        );
    }

    #[test]
    fn text_is_emitted_once_when_finished_and_the_prompt_echo_is_skipped() {
        let mut m = EventMapper::new();
        m.map(&ev(
            "message.updated",
            json!({"sessionID":"s","info":{"id":"m1","role":"user"}}),
        ));
        let echo = ev(
            "message.part.updated",
            json!({"part":{"id":"p0","messageID":"m1","type":"text","text":"@@reply hi"}}),
        );
        assert!(m.map(&echo).events.is_empty());
        let partial = ev(
            "message.part.updated",
            json!({"part":{"id":"p1","messageID":"m2","type":"text","text":"all","time":{"start":1}}}),
        );
        assert!(m.map(&partial).events.is_empty());
        let done = ev(
            "message.part.updated",
            json!({"part":{"id":"p1","messageID":"m2","type":"text","text":"all good","time":{"start":1,"end":2}}}),
        );
        assert_eq!(
            m.map(&done).events,
            vec![AgentEvent::Message {
                role: "assistant".into(),
                text: "all good".into()
            }]
        );
        assert!(m.map(&done).events.is_empty());
    }

    #[test]
    fn status_errors_usage_and_costs_are_mapped() {
        let mut m = EventMapper::new();
        assert!(
            m.map(&ev(
                "session.status",
                json!({"sessionID":"s","status":{"type":"busy"}})
            ))
            .busy
        );
        assert!(
            m.map(&ev(
                "session.status",
                json!({"sessionID":"s","status":{"type":"idle"}})
            ))
            .idle
        );
        assert!(m.map(&ev("session.idle", json!({"sessionID":"s"}))).idle);
        let retry = m.map(&ev(
            "session.status",
            json!({"status":{"type":"retry","attempt":2,"message":"overloaded","next":1}}),
        ));
        assert!(
            matches!(&retry.events[0], AgentEvent::Error { message } if message.contains("overloaded"))
        );
        let aborted = m.map(&ev(
            "session.error",
            json!({"error":{"name":"MessageAbortedError","data":{"message":"Aborted"}}}),
        ));
        assert_eq!(aborted.events.len(), 1);
        assert_eq!(m.session_error(), None, "an abort is not a failure");
        m.map(&ev(
            "session.error",
            json!({"error":{"name":"APIError","data":{"message":"bad request"}}}),
        ));
        assert_eq!(m.session_error(), Some("APIError: bad request"));
        let step = ev(
            "message.part.updated",
            json!({"part":{"id":"p","messageID":"m","type":"step-finish",
            "tokens":{"input":10,"output":3,"reasoning":2,"cache":{"read":4,"write":5}},"cost":0.5}}),
        );
        assert_eq!(
            m.map(&step).events,
            vec![AgentEvent::Usage(Usage {
                input_tokens: 10,
                output_tokens: 5,
                cache_read_input_tokens: 4,
                cache_creation_input_tokens: 5
            })]
        );
        m.map(&ev(
            "message.updated",
            json!({"info":{"id":"a1","role":"assistant","cost":0.25}}),
        ));
        m.map(&ev(
            "message.updated",
            json!({"info":{"id":"a1","role":"assistant","cost":0.5}}),
        ));
        m.map(&ev(
            "message.updated",
            json!({"info":{"id":"a2","role":"assistant","cost":0.25}}),
        ));
        assert_eq!(m.turns(), 2);
        assert!((m.cost() - 0.75).abs() < 1e-9);
        assert!(m.map(&ev("session.updated", json!({}))).events.is_empty());
        assert!(matches!(
            m.map(&ev("todo.updated", json!({}))).events[0],
            AgentEvent::Raw { .. }
        ));
    }

    #[test]
    fn only_a_new_user_message_admits_the_prompt() {
        let user = |id: &str| ev("message.updated", json!({"info":{"id":id,"role":"user"}}));
        let mut m = EventMapper::with_earlier_prompts(["u1".to_owned()]);
        m.map(&user("u1"));
        assert!(!m.prompt_admitted());
        m.map(&ev(
            "message.updated",
            json!({"info":{"id":"a1","role":"assistant"}}),
        ));
        assert!(!m.prompt_admitted());
        m.map(&user("u2"));
        assert!(m.prompt_admitted());
    }

    #[test]
    fn summary_counts_only_the_answers_to_the_last_prompt() {
        let msgs = vec![
            json!({"info":{"id":"u1","role":"user"},"parts":[]}),
            json!({"info":{"id":"a0","role":"assistant","parentID":"u1","cost":9.0,"tokens":{"input":99,"output":9,"reasoning":0,"cache":{"read":0,"write":0}}},"parts":[]}),
            json!({"info":{"id":"u2","role":"user"},"parts":[{"type":"text","text":"@@reply x"}]}),
            json!({"info":{"id":"a1","role":"assistant","parentID":"u2","cost":0.25,"tokens":{"input":10,"output":1,"reasoning":0,"cache":{"read":2,"write":0}}},"parts":[{"type":"tool"}]}),
            json!({"info":{"id":"a2","role":"assistant","parentID":"u2","cost":0.5,"tokens":{"input":20,"output":2,"reasoning":1,"cache":{"read":0,"write":3}}},
                   "parts":[{"type":"text","text":"all good"},{"type":"text","text":"hidden","synthetic":true}]}),
        ];
        let s = summarize(&msgs);
        assert_eq!(s.turns, 2);
        assert!((s.cost_usd - 0.75).abs() < 1e-9);
        assert_eq!(
            s.usage,
            Usage {
                input_tokens: 30,
                output_tokens: 4,
                cache_read_input_tokens: 2,
                cache_creation_input_tokens: 3
            }
        );
        assert_eq!(s.output, "all good");
        assert_eq!(s.error, None);
        assert!(!s.aborted);
    }

    #[test]
    fn summary_reports_the_last_error_and_aborts_apart() {
        let failed = [
            json!({"info":{"id":"u","role":"user"},"parts":[]}),
            json!({"info":{"id":"a","role":"assistant","parentID":"u","error":{"name":"APIError","data":{"message":"nope"}}},"parts":[]}),
        ];
        assert_eq!(summarize(&failed).error.as_deref(), Some("APIError: nope"));
        let aborted = [
            json!({"info":{"id":"u","role":"user"},"parts":[]}),
            json!({"info":{"id":"a","role":"assistant","parentID":"u","error":{"name":"MessageAbortedError","data":{"message":"Aborted"}}},"parts":[]}),
        ];
        let s = summarize(&aborted);
        assert!(s.aborted && s.error.is_none());
    }
}
