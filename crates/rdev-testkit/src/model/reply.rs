//! Frames an [`Answer`] the way the Anthropic Messages API does: a JSON `message` object,
//! or the `stream: true` SSE event sequence (message_start, ping, content_block_start,
//! content_block_delta with text_delta / input_json_delta chunks, content_block_stop,
//! message_delta, message_stop), plus the error body shape. It must not decide what to
//! answer (that is `conversation`'s job) nor touch sockets.

use serde_json::{json, Value};
use uuid::Uuid;

use super::conversation::Answer;

/// A plausible token count for `chars` characters of text (about four per token).
pub fn estimate_tokens(chars: usize) -> u64 {
    (chars as u64).div_ceil(4).max(1)
}

/// Anthropic's error body: `{"type":"error","error":{"type":..,"message":..}}`.
pub fn error_body(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// The content block, stop reason and output size of a non-error answer.
fn block(answer: &Answer) -> (Value, &'static str, usize) {
    match answer {
        Answer::Text(text) => (
            json!({"type": "text", "text": text}),
            "end_turn",
            text.len(),
        ),
        Answer::ToolUse { name, input } => {
            let id = format!("toolu_{}", Uuid::new_v4().simple());
            let size = input.to_string().len() + name.len();
            (
                json!({"type": "tool_use", "id": id, "name": name, "input": input}),
                "tool_use",
                size,
            )
        }
        Answer::Error { message, .. } => (
            json!({"type": "text", "text": message}),
            "end_turn",
            message.len(),
        ),
    }
}

fn usage(input_tokens: u64, output_tokens: u64) -> Value {
    json!({
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "service_tier": "standard"
    })
}

fn message_id() -> String {
    format!("msg_{}", Uuid::new_v4().simple())
}

/// The `output_tokens` an answer reports (JSON and SSE alike).
pub fn output_tokens(answer: &Answer) -> u64 {
    estimate_tokens(block(answer).2)
}

/// The non-streaming response body.
pub fn message_json(answer: &Answer, model: &str, input_tokens: u64) -> Value {
    let (content, stop_reason, size) = block(answer);
    json!({
        "id": message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [content],
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": usage(input_tokens, estimate_tokens(size)),
    })
}

/// Splits `s` into about `parts` pieces on char boundaries (at least one piece).
fn chunks(s: &str, parts: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    if chars.is_empty() {
        return vec![String::new()];
    }
    let size = chars.len().div_ceil(parts.max(1)).max(1);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

/// The SSE events `(event name, data)` of a streamed response, in order.
pub fn sse_events(answer: &Answer, model: &str, input_tokens: u64) -> Vec<(&'static str, Value)> {
    let (content, stop_reason, size) = block(answer);
    let mut events = vec![
        (
            "message_start",
            json!({"type": "message_start", "message": {
                "id": message_id(), "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": usage(input_tokens, 1),
            }}),
        ),
        ("ping", json!({"type": "ping"})),
    ];
    let (start_block, deltas) = if content["type"] == "tool_use" {
        let partial = content["input"].to_string();
        let deltas = chunks(&partial, 4)
            .into_iter()
            .map(|c| json!({"type": "input_json_delta", "partial_json": c}))
            .collect::<Vec<_>>();
        let start =
            json!({"type": "tool_use", "id": content["id"], "name": content["name"], "input": {}});
        (start, deltas)
    } else {
        let text = content["text"].as_str().unwrap_or_default();
        let deltas = chunks(text, 2)
            .into_iter()
            .map(|c| json!({"type": "text_delta", "text": c}))
            .collect();
        (json!({"type": "text", "text": ""}), deltas)
    };
    events.push((
        "content_block_start",
        json!({"type": "content_block_start", "index": 0, "content_block": start_block}),
    ));
    for delta in deltas {
        events.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": delta}),
        ));
    }
    events.push((
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push((
        "message_delta",
        json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": null},
            "usage": {"input_tokens": input_tokens, "output_tokens": estimate_tokens(size),
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}),
    ));
    events.push(("message_stop", json!({"type": "message_stop"})));
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_input_is_streamed_in_several_chunks_that_rejoin_to_the_input() {
        let input = json!({"file_path": "/tmp/x/hello.txt", "content": "hello world\n"});
        let answer = Answer::ToolUse {
            name: "Write".into(),
            input: input.clone(),
        };
        let events = sse_events(&answer, "m", 10);
        let partials: Vec<&str> = events
            .iter()
            .filter(|(n, _)| *n == "content_block_delta")
            .map(|(_, d)| d["delta"]["partial_json"].as_str().unwrap())
            .collect();
        assert!(partials.len() >= 3, "{partials:?}");
        let joined: Value = serde_json::from_str(&partials.concat()).unwrap();
        assert_eq!(joined, input);
        let names: Vec<&str> = events.iter().map(|(n, _)| *n).collect();
        assert_eq!(names.first(), Some(&"message_start"));
        assert_eq!(names.last(), Some(&"message_stop"));
        let delta = &events[events.len() - 2].1;
        assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    }

    #[test]
    fn text_json_message_has_end_turn_and_usage() {
        let m = message_json(&Answer::Text("Done.".into()), "claude-x", 42);
        assert_eq!(m["content"][0]["text"], "Done.");
        assert_eq!(m["stop_reason"], "end_turn");
        assert_eq!(m["usage"]["input_tokens"], 42);
        assert_eq!(m["usage"]["output_tokens"], 2);
    }

    #[test]
    fn chunks_respect_multibyte_chars() {
        assert_eq!(chunks("héllo→", 3).concat(), "héllo→");
        assert_eq!(chunks("", 3), vec![String::new()]);
    }
}
