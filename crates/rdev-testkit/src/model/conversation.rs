//! Reads one Messages API request body and decides what the scripted model answers: a side
//! answer (title/summary requests, requests without tools), an echo for prompts without
//! directives, or the script step this conversation has reached. It is stateless: the step
//! is derived from the request alone, so concurrent sessions and resumed sessions work. It
//! must not do I/O or know about HTTP framing (JSON vs SSE is `reply`'s job).

use std::{path::Path, sync::LazyLock, time::Duration};

use regex::Regex;
use serde_json::{json, Map, Value};

use super::script::{self, Step};

/// Text served when the steps run out without `@@reply`.
pub const DONE_TEXT: &str = "Done.";

/// What the model answers, before it is framed as JSON or SSE.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// A text block, `stop_reason: end_turn`.
    Text(String),
    /// One tool_use block, `stop_reason: tool_use`.
    ToolUse {
        /// Tool name exactly as the request's `tools` array spells it.
        name: String,
        /// Tool input object.
        input: Value,
    },
    /// An HTTP error with an Anthropic error body.
    Error {
        /// HTTP status.
        status: u16,
        /// Anthropic error type (`api_error`, `overloaded_error`, ...).
        kind: &'static str,
        /// Human-readable message.
        message: String,
    },
}

/// The decision for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// What to answer.
    pub answer: Answer,
    /// How long to wait before answering (`@@sleep`).
    pub delay: Duration,
    /// Index of the script step served (`None` for side, echo and error-free non-script answers).
    pub step: Option<usize>,
    /// True for side requests (titles, summaries, no tools) that never consume steps.
    pub side: bool,
}

impl Decision {
    fn immediate(answer: Answer, step: Option<usize>, side: bool) -> Self {
        Self {
            answer,
            delay: Duration::ZERO,
            step,
            side,
        }
    }
}

/// Anthropic error type for an HTTP status, as the real API uses them.
pub fn error_kind(status: u16) -> &'static str {
    match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

static WORKDIR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?mi)^[\s*-]*(?:primary\s+)?working directory:\s*(/\S.*?)\s*$")
        .expect("valid regex")
});

/// System prompts of the CLIs' helper requests (session titles, conversation summaries).
static SIDE_SYSTEM: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(title generator|generate a (concise |short )?title|summarize this coding conversation|topic of the conversation|is this a new conversation topic)")
        .expect("valid regex")
});

/// Decides the answer for a `/v1/messages` request body.
pub fn decide(body: &Value) -> Decision {
    let tools = body
        .get("tools")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let system = system_text(body.get("system"));
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();

    if tools.is_empty() || SIDE_SYSTEM.is_match(&system) {
        return Decision::immediate(Answer::Text(side_text(&system)), None, true);
    }
    let Some(turn) = messages.iter().rposition(is_human_turn) else {
        return Decision::immediate(Answer::Text(DONE_TEXT.into()), None, false);
    };
    let prompt = texts(&messages[turn]["content"]).join("\n");
    if !script::has_directives(&prompt) {
        return Decision::immediate(Answer::Text(echo(&prompt)), None, false);
    }
    let script = match script::parse(&prompt) {
        Ok(script) => script,
        Err(err) => {
            return Decision::immediate(invalid(format!("scripted-model: {err}")), None, false)
        }
    };
    let index = messages[turn + 1..]
        .iter()
        .filter(|m| m["role"] == "assistant")
        .count();
    let Some(scripted) = script.steps.get(index) else {
        return Decision {
            answer: Answer::Text(DONE_TEXT.into()),
            delay: script.trailing_delay,
            step: Some(index),
            side: false,
        };
    };
    let workdir = WORKDIR
        .captures(&system)
        .map(|c| c[1].to_owned())
        .or_else(|| find_workdir_in_messages(messages));
    let answer = match &scripted.step {
        Step::Write { path, content } => {
            write_call(tools, &absolute(workdir.as_deref(), path), content)
        }
        Step::Bash { command } => bash_call(tools, command),
        Step::Reply { text } => Answer::Text(text.clone()),
        Step::Error { status, message } => Answer::Error {
            status: *status,
            kind: error_kind(*status),
            message: message.clone(),
        },
    };
    Decision {
        answer,
        delay: scripted.delay,
        step: Some(index),
        side: false,
    }
}

/// The model named in the request, if any.
pub fn model(body: &Value) -> Option<String> {
    body.get("model").and_then(Value::as_str).map(str::to_owned)
}

fn invalid(message: String) -> Answer {
    Answer::Error {
        status: 400,
        kind: "invalid_request_error",
        message,
    }
}

fn side_text(system: &str) -> String {
    if system.to_ascii_lowercase().contains("title") {
        "Scripted session".into()
    } else {
        "OK".into()
    }
}

fn echo(prompt: &str) -> String {
    let first = prompt
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('<'))
        .unwrap_or("");
    format!("You said: {first}")
}

/// The system prompt as one string (`system` may be a string or a list of text blocks).
fn system_text(system: Option<&Value>) -> String {
    system.map(|s| texts(s).join("\n")).unwrap_or_default()
}

/// Text of a `content` value: a plain string, or the `text` of every text block.
pub(super) fn texts(content: &Value) -> Vec<&str> {
    match content {
        Value::String(s) => vec![s.as_str()],
        Value::Array(blocks) => blocks
            .iter()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b["text"].as_str())
            .collect(),
        _ => Vec::new(),
    }
}

/// A user message typed by a person (not a tool result carrier).
fn is_human_turn(message: &Value) -> bool {
    if message["role"] != "user" {
        return false;
    }
    let content = &message["content"];
    let carries_tool_result = content
        .as_array()
        .is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "tool_result"));
    !carries_tool_result && texts(content).iter().any(|t| !t.trim().is_empty())
}

/// Some CLIs put the environment block in a user message instead of the system prompt.
fn find_workdir_in_messages(messages: &[Value]) -> Option<String> {
    messages
        .iter()
        .filter(|m| m["role"] == "user")
        .flat_map(|m| texts(&m["content"]))
        .find_map(|t| WORKDIR.captures(t).map(|c| c[1].to_owned()))
}

fn absolute(workdir: Option<&str>, path: &str) -> String {
    match workdir {
        Some(dir) if !Path::new(path).is_absolute() => {
            Path::new(dir).join(path).display().to_string()
        }
        _ => path.to_owned(),
    }
}

/// Finds a tool by case-insensitive name and returns its real name and schema properties.
fn find_tool<'a>(
    tools: &'a [Value],
    wanted: &str,
) -> Option<(&'a str, Option<&'a Map<String, Value>>)> {
    tools.iter().find_map(|t| {
        let name = t["name"].as_str()?;
        name.eq_ignore_ascii_case(wanted)
            .then(|| (name, t["input_schema"]["properties"].as_object()))
    })
}

fn missing_tool(wanted: &str, tools: &[Value]) -> Answer {
    let offered: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
    invalid(format!(
        "scripted-model: the script needs a {wanted} tool but the request offers {offered:?}"
    ))
}

fn write_call(tools: &[Value], path: &str, content: &str) -> Answer {
    let Some((name, props)) = find_tool(tools, "write") else {
        return missing_tool("write", tools);
    };
    let path_key = ["file_path", "filePath", "path"]
        .into_iter()
        .find(|k| props.is_some_and(|p| p.contains_key(*k)))
        .unwrap_or("file_path");
    let mut input = Map::new();
    input.insert(path_key.into(), json!(path));
    input.insert("content".into(), json!(content));
    Answer::ToolUse {
        name: name.to_owned(),
        input: Value::Object(input),
    }
}

fn bash_call(tools: &[Value], command: &str) -> Answer {
    let Some((name, props)) = find_tool(tools, "bash") else {
        return missing_tool("bash", tools);
    };
    let mut input = Map::new();
    input.insert("command".into(), json!(command));
    if props.is_some_and(|p| p.contains_key("description")) {
        let short: String = command.chars().take(60).collect();
        input.insert("description".into(), json!(format!("Run {short}")));
    }
    Answer::ToolUse {
        name: name.to_owned(),
        input: Value::Object(input),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> Value {
        json!([
            {"name": "Write", "input_schema": {"properties": {"file_path": {}, "content": {}}}},
            {"name": "Bash", "input_schema": {"properties": {"command": {}, "description": {}}}}
        ])
    }

    fn body(messages: Value) -> Value {
        json!({
            "model": "claude-sonnet-4-5",
            "system": [{"type": "text", "text": "You are an agent.\n - Primary working directory: /tmp/work\n - Platform: linux"}],
            "tools": tools(),
            "messages": messages,
        })
    }

    const SCRIPT: &str = "Do it\n@@write out.txt\nhi\n@@end\n@@bash ls\n@@reply fin";

    #[test]
    fn first_request_serves_write_with_absolute_path() {
        let d = decide(&body(json!([{"role": "user", "content": SCRIPT}])));
        assert_eq!(d.step, Some(0));
        assert_eq!(
            d.answer,
            Answer::ToolUse {
                name: "Write".into(),
                input: json!({"file_path": "/tmp/work/out.txt", "content": "hi\n"})
            }
        );
    }

    #[test]
    fn assistant_turns_after_the_script_select_the_step() {
        let msgs = json!([
            {"role": "user", "content": [{"type": "text", "text": "<system-reminder>x</system-reminder>"}, {"type": "text", "text": SCRIPT}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "a", "name": "Write", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a", "content": "ok"}, {"type": "text", "text": "reminder"}]},
        ]);
        let d = decide(&body(msgs.clone()));
        assert_eq!(d.step, Some(1));
        assert!(
            matches!(d.answer, Answer::ToolUse { ref input, .. } if input["command"] == "ls" && input["description"] == "Run ls")
        );

        let mut more = msgs.as_array().unwrap().clone();
        more.push(json!({"role": "assistant", "content": [{"type": "tool_use", "id": "b", "name": "Bash", "input": {}}]}));
        more.push(json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "b", "content": ""}]}));
        assert_eq!(
            decide(&body(json!(more.clone()))).answer,
            Answer::Text("fin".into())
        );
        more.push(json!({"role": "assistant", "content": "fin"}));
        more.push(json!({"role": "user", "content": "@@bash pwd"}));
        let resumed = decide(&body(json!(more)));
        assert_eq!(resumed.step, Some(0));
        assert!(
            matches!(resumed.answer, Answer::ToolUse { ref input, .. } if input["command"] == "pwd")
        );
    }

    #[test]
    fn steps_running_out_answer_done() {
        let msgs = json!([
            {"role": "user", "content": "@@bash ls"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "a", "name": "Bash", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a", "content": ""}]},
        ]);
        assert_eq!(decide(&body(msgs)).answer, Answer::Text(DONE_TEXT.into()));
    }

    #[test]
    fn opencode_tool_shapes_are_matched_case_insensitively() {
        let mut b = body(json!([{"role": "user", "content": "@@write /abs/f\nx\n@@end"}]));
        b["tools"] = json!([
            {"name": "write", "input_schema": {"properties": {"filePath": {}, "content": {}}}},
        ]);
        assert_eq!(
            decide(&b).answer,
            Answer::ToolUse {
                name: "write".into(),
                input: json!({"filePath": "/abs/f", "content": "x\n"})
            }
        );
    }

    #[test]
    fn side_requests_never_take_steps() {
        let mut b = body(json!([{"role": "user", "content": SCRIPT}]));
        b["tools"] = json!([]);
        let d = decide(&b);
        assert!(d.side);
        assert_eq!(d.step, None);
        let mut t = body(json!([{"role": "user", "content": SCRIPT}]));
        t["system"] = json!("You are a title generator. You output ONLY a thread title.");
        assert_eq!(decide(&t).answer, Answer::Text("Scripted session".into()));
    }

    #[test]
    fn plain_prompt_is_echoed_and_bad_script_is_a_400() {
        let d = decide(&body(
            json!([{"role": "user", "content": "hello there\nsecond"}]),
        ));
        assert_eq!(d.answer, Answer::Text("You said: hello there".into()));
        let bad = decide(&body(json!([{"role": "user", "content": "@@wirte x"}])));
        assert!(matches!(bad.answer, Answer::Error { status: 400, .. }));
    }

    #[test]
    fn error_step_maps_status_to_anthropic_type() {
        let d = decide(&body(
            json!([{"role": "user", "content": "@@error 529 busy"}]),
        ));
        assert_eq!(
            d.answer,
            Answer::Error {
                status: 529,
                kind: "overloaded_error",
                message: "busy".into()
            }
        );
    }
}
