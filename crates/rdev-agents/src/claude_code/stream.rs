//! The Claude Code `--output-format stream-json` parser: one JSON object per line, mapped to
//! [`AgentEvent`]s, and the final `result` line kept as a [`FinalResult`].
//!
//! Lines have no length limit (a tool result can be many megabytes): [`LineReader`] grows
//! its buffer as needed. Unknown line types and content blocks become
//! [`AgentEvent::Raw`]; a malformed line becomes an [`AgentEvent::Error`] and parsing goes
//! on with the next line. This module does no process handling and never drops a line
//! silently.

use rdev_core::{AgentEvent, Usage};
use serde_json::{Map, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// How many bytes of a malformed line are quoted in its error event.
const SNIPPET_BYTES: usize = 120;

/// What the `result` line reported.
#[derive(Debug, Clone, PartialEq)]
pub struct FinalResult {
    /// `success`, `error_max_turns`, `error_during_execution`, ...
    pub subtype: String,
    pub is_error: bool,
    pub session_id: Option<String>,
    pub cost_usd: Option<f64>,
    pub usage: Usage,
    pub num_turns: u32,
    /// The final answer text, or the error description when `is_error`.
    pub text: String,
}

/// Maps stream-json lines to events; keeps the session id and the final result.
#[derive(Debug, Default)]
pub struct StreamParser {
    lines: u64,
    session_id: Option<String>,
    result: Option<FinalResult>,
}

impl StreamParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// The session id from `system/init` (or the result), once seen.
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// The `result` line, once seen.
    pub fn result(&self) -> Option<&FinalResult> {
        self.result.as_ref()
    }

    /// Number of lines parsed so far (blank lines included).
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Parses one line (with or without its trailing newline) and appends the events it
    /// maps to to `out`. Blank lines produce nothing.
    pub fn parse_line(&mut self, line: &[u8], out: &mut Vec<AgentEvent>) {
        self.lines += 1;
        let line = line.trim_ascii();
        if line.is_empty() {
            return;
        }
        match serde_json::from_slice::<Value>(line) {
            Ok(Value::Object(obj)) => self.map_object(obj, out),
            Ok(other) => out.push(AgentEvent::Raw { value: other }),
            Err(e) => out.push(AgentEvent::Error {
                message: format!(
                    "malformed stream-json line {}: {e}; line starts with {:?}",
                    self.lines,
                    snippet(line)
                ),
            }),
        }
    }

    fn map_object(&mut self, mut obj: Map<String, Value>, out: &mut Vec<AgentEvent>) {
        let kind = obj.get("type").and_then(Value::as_str).unwrap_or_default();
        match kind {
            "system" if obj.get("subtype").and_then(Value::as_str) == Some("init") => {
                self.session_id = take_string(&mut obj, "session_id").or(self.session_id.take());
                let model = take_string(&mut obj, "model");
                let tools = match obj.remove("tools") {
                    Some(Value::Array(tools)) => tools
                        .into_iter()
                        .filter_map(|t| match t {
                            Value::String(s) => Some(s),
                            _ => None,
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                out.push(AgentEvent::Started {
                    session_id: self.session_id.clone(),
                    model,
                    tools,
                });
            }
            "assistant" | "user" if has_content(&obj) => {
                let role = if kind == "assistant" {
                    "assistant"
                } else {
                    "user"
                };
                let content = obj
                    .get_mut("message")
                    .and_then(|m| m.get_mut("content"))
                    .map(Value::take)
                    .unwrap_or_default();
                map_content(role, content, out);
            }
            "result" => {
                let result = self.map_result(&mut obj);
                out.push(AgentEvent::Usage(result.usage));
                self.result = Some(result);
            }
            _ => out.push(AgentEvent::Raw {
                value: Value::Object(obj),
            }),
        }
    }

    fn map_result(&mut self, obj: &mut Map<String, Value>) -> FinalResult {
        let session_id = take_string(obj, "session_id").or_else(|| self.session_id.clone());
        if self.session_id.is_none() {
            self.session_id.clone_from(&session_id);
        }
        let is_error = obj
            .get("is_error")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let subtype = take_string(obj, "subtype").unwrap_or_else(|| "unknown".to_owned());
        let mut text = take_string(obj, "result").unwrap_or_default();
        if text.is_empty() {
            // Error subtypes carry an `errors` array instead of a `result` text.
            if let Some(Value::Array(errors)) = obj.get("errors") {
                text = errors
                    .iter()
                    .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join("; ");
            }
        }
        if text.is_empty() && is_error {
            text = subtype.clone();
        }
        FinalResult {
            subtype,
            is_error,
            session_id,
            cost_usd: obj.get("total_cost_usd").and_then(Value::as_f64),
            usage: obj.get("usage").map(usage_of).unwrap_or_default(),
            num_turns: obj
                .get("num_turns")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
            text,
        }
    }
}

fn has_content(obj: &Map<String, Value>) -> bool {
    obj.get("message").and_then(|m| m.get("content")).is_some()
}

fn take_string(obj: &mut Map<String, Value>, key: &str) -> Option<String> {
    match obj.remove(key) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

fn usage_of(v: &Value) -> Usage {
    let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        input_tokens: n("input_tokens"),
        output_tokens: n("output_tokens"),
        cache_read_input_tokens: n("cache_read_input_tokens"),
        cache_creation_input_tokens: n("cache_creation_input_tokens"),
    }
}

/// Maps a message's `content` (a string or an array of blocks) to events.
fn map_content(role: &str, content: Value, out: &mut Vec<AgentEvent>) {
    let blocks = match content {
        Value::String(text) => {
            out.push(AgentEvent::Message {
                role: role.to_owned(),
                text,
            });
            return;
        }
        Value::Array(blocks) => blocks,
        other => {
            out.push(AgentEvent::Raw { value: other });
            return;
        }
    };
    for block in blocks {
        let Value::Object(mut b) = block else {
            out.push(AgentEvent::Raw { value: block });
            continue;
        };
        match b.get("type").and_then(Value::as_str).unwrap_or_default() {
            "text" => {
                let text = take_string(&mut b, "text").unwrap_or_default();
                out.push(AgentEvent::Message {
                    role: role.to_owned(),
                    text,
                });
            }
            "tool_use" => out.push(AgentEvent::ToolUse {
                id: take_string(&mut b, "id").unwrap_or_default(),
                name: take_string(&mut b, "name").unwrap_or_default(),
                input: b.remove("input").unwrap_or(Value::Null),
            }),
            "tool_result" => out.push(AgentEvent::ToolResult {
                id: take_string(&mut b, "tool_use_id").unwrap_or_default(),
                is_error: b.get("is_error").and_then(Value::as_bool).unwrap_or(false),
                output: tool_output(b.remove("content").unwrap_or(Value::Null)),
            }),
            _ => out.push(AgentEvent::Raw {
                value: Value::Object(b),
            }),
        }
    }
}

/// A tool result's content as text: a string as is, text blocks joined by newlines, other
/// blocks (images) as a short placeholder naming their type.
fn tool_output(content: Value) -> String {
    match content {
        Value::String(s) => s,
        Value::Null => String::new(),
        Value::Array(blocks) => {
            let parts: Vec<String> = blocks
                .into_iter()
                .map(|b| match b {
                    Value::Object(mut o) => match take_string(&mut o, "text") {
                        Some(t) => t,
                        None => format!(
                            "[{} block]",
                            o.get("type").and_then(Value::as_str).unwrap_or("unknown")
                        ),
                    },
                    Value::String(s) => s,
                    other => other.to_string(),
                })
                .collect();
            parts.join("\n")
        }
        other => other.to_string(),
    }
}

fn snippet(line: &[u8]) -> String {
    let end = line.len().min(SNIPPET_BYTES);
    String::from_utf8_lossy(&line[..end]).into_owned()
}

/// Reads newline-terminated lines of any length from a buffered reader, reusing one buffer.
#[derive(Debug)]
pub struct LineReader<R> {
    reader: R,
    buf: Vec<u8>,
    complete: bool,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    /// Wraps `reader`.
    pub fn new(reader: R) -> Self {
        Self {
            reader,
            buf: Vec::with_capacity(64 * 1024),
            complete: false,
        }
    }

    /// The next line without its newline, or `None` at EOF. Cancel-safe: bytes read before
    /// a cancellation stay buffered and the next call continues the same line.
    pub async fn next_line(&mut self) -> std::io::Result<Option<&[u8]>> {
        if self.complete {
            self.buf.clear();
            self.complete = false;
        }
        let n = self.reader.read_until(b'\n', &mut self.buf).await?;
        if n == 0 && self.buf.is_empty() {
            return Ok(None);
        }
        self.complete = true;
        let line = self.buf.strip_suffix(b"\n").unwrap_or(&self.buf);
        Ok(Some(line))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(lines: &[Value]) -> (StreamParser, Vec<AgentEvent>) {
        let mut p = StreamParser::new();
        let mut out = Vec::new();
        for l in lines {
            p.parse_line(l.to_string().as_bytes(), &mut out);
        }
        (p, out)
    }

    #[test]
    fn maps_init_assistant_user_and_result() {
        let (p, ev) = parse(&[
            json!({"type":"system","subtype":"init","session_id":"s1","model":"m","tools":["Write","Bash"],"cwd":"/w"}),
            json!({"type":"assistant","message":{"content":[
                {"type":"text","text":"hi"},
                {"type":"tool_use","id":"t1","name":"Bash","input":{"command":"ls"}},
                {"type":"thinking","thinking":"hmm"}]}}),
            json!({"type":"user","message":{"content":[
                {"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}],"is_error":true}]}}),
            json!({"type":"result","subtype":"success","is_error":false,"session_id":"s1","total_cost_usd":0.5,
                   "usage":{"input_tokens":10,"output_tokens":3,"cache_read_input_tokens":2},"num_turns":2,"result":"done"}),
        ]);
        assert_eq!(
            ev[0],
            AgentEvent::Started {
                session_id: Some("s1".into()),
                model: Some("m".into()),
                tools: vec!["Write".into(), "Bash".into()]
            }
        );
        assert_eq!(
            ev[1],
            AgentEvent::Message {
                role: "assistant".into(),
                text: "hi".into()
            }
        );
        assert_eq!(
            ev[2],
            AgentEvent::ToolUse {
                id: "t1".into(),
                name: "Bash".into(),
                input: json!({"command":"ls"})
            }
        );
        assert!(matches!(&ev[3], AgentEvent::Raw { value } if value["type"] == "thinking"));
        assert_eq!(
            ev[4],
            AgentEvent::ToolResult {
                id: "t1".into(),
                output: "a\nb".into(),
                is_error: true
            }
        );
        let usage = Usage {
            input_tokens: 10,
            output_tokens: 3,
            cache_read_input_tokens: 2,
            ..Usage::default()
        };
        assert_eq!(ev[5], AgentEvent::Usage(usage));
        let r = p.result().unwrap();
        assert_eq!(
            (
                r.subtype.as_str(),
                r.is_error,
                r.cost_usd,
                r.num_turns,
                r.text.as_str()
            ),
            ("success", false, Some(0.5), 2, "done")
        );
        assert_eq!(p.session_id(), Some("s1"));
    }

    #[test]
    fn unknown_types_are_raw_and_malformed_lines_are_errors_that_do_not_stop_parsing() {
        let mut p = StreamParser::new();
        let mut out = Vec::new();
        p.parse_line(br#"{"type":"rate_limit_event","x":1}"#, &mut out);
        p.parse_line(b"{not json", &mut out);
        p.parse_line(b"   ", &mut out);
        p.parse_line(br#"{"type":"result","subtype":"error_max_turns","is_error":true,"errors":["too many turns"]}"#, &mut out);
        assert!(matches!(&out[0], AgentEvent::Raw { value } if value["x"] == 1));
        assert!(
            matches!(&out[1], AgentEvent::Error { message } if message.contains("line 2") && message.contains("{not json")),
            "{:?}",
            out[1]
        );
        let r = p.result().unwrap();
        assert!(r.is_error);
        assert_eq!(r.text, "too many turns");
        assert_eq!(p.lines(), 4);
    }

    #[tokio::test]
    async fn line_reader_handles_a_20_mb_line_between_small_ones() {
        let big = "x\\n".repeat(10 * 1024 * 1024 / 3 * 2);
        assert!(big.len() >= 20 * 1024 * 1024 - 16);
        let line = format!(
            r#"{{"type":"user","message":{{"content":[{{"type":"tool_result","tool_use_id":"t","content":"{big}"}}]}}}}"#
        );
        let data = format!("{{\"type\":\"a\"}}\n{line}\n{{\"type\":\"b\"}}");
        let mut reader = LineReader::new(tokio::io::BufReader::new(data.as_bytes()));
        let mut p = StreamParser::new();
        let mut out = Vec::new();
        while let Some(l) = reader.next_line().await.unwrap() {
            p.parse_line(l, &mut out);
        }
        assert_eq!(out.len(), 3);
        match &out[1] {
            AgentEvent::ToolResult { output, .. } => {
                assert_eq!(output.len(), big.len() / 3 * 2);
                assert!(output.starts_with("x\nx\n"));
            }
            other => panic!("expected a tool result, got {other:?}"),
        }
        assert!(matches!(&out[2], AgentEvent::Raw { value } if value["type"] == "b"));
    }
}
