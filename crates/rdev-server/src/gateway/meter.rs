//! Usage from the upstream's own reports, read on the side of a response that is streamed
//! to the agent unchanged: a JSON body's `usage`, or a stream's `message_start`
//! (`message.usage`: input and cache tokens) and `message_delta` events (`usage`,
//! cumulative: the last value counts, they are never added up). Events are parsed by
//! `eventsource-stream`. What is read when the stream ends (finished, or cut by either
//! side) is what is billed. This module reads; settling is the caller's.

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use rdev_core::MeteredUsage;
use serde_json::Value;

/// The largest JSON body read for its usage; a bigger one is forwarded unmetered.
const MAX_JSON: usize = 16 * 1024 * 1024;

/// What a response reported.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reported {
    /// The model the upstream says answered.
    pub model: Option<String>,
    pub usage: MeteredUsage,
    /// Whether any usage was reported at all.
    pub seen: bool,
}

/// Sets from `u` (an Anthropic `usage` object) every field it has; fields it lacks keep
/// their value, so a later cumulative report overrides an earlier one field by field.
fn apply(usage: &mut MeteredUsage, u: &Value) {
    let get = |k: &str| u.get(k).and_then(Value::as_u64);
    if let Some(v) = get("input_tokens") {
        usage.input_tokens = v;
    }
    if let Some(v) = get("output_tokens") {
        usage.output_tokens = v;
    }
    if let Some(v) = get("cache_read_input_tokens") {
        usage.cache_read_input_tokens = v;
    }
    if let Some(v) = get("cache_creation_input_tokens") {
        usage.cache_creation_input_tokens = v;
    }
    if let Some(v) = u
        .get("cache_creation")
        .and_then(|c| c.get("ephemeral_1h_input_tokens"))
        .and_then(Value::as_u64)
    {
        usage.cache_creation_1h_input_tokens = v;
    }
}

impl Reported {
    /// One SSE event of a Messages stream.
    pub fn event(&mut self, name: &str, data: &str) {
        if name != "message_start" && name != "message_delta" {
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return;
        };
        if name == "message_start" {
            let message = &v["message"];
            if let Some(m) = message.get("model").and_then(Value::as_str) {
                self.model = Some(m.to_owned());
            }
            if let Some(u) = message.get("usage") {
                apply(&mut self.usage, u);
                self.seen = true;
            }
        } else if let Some(u) = v.get("usage") {
            apply(&mut self.usage, u);
            self.seen = true;
        }
    }

    /// A whole JSON Messages response.
    pub fn json(body: &[u8]) -> Self {
        let mut r = Self::default();
        if let Ok(v) = serde_json::from_slice::<Value>(body) {
            r.model = v.get("model").and_then(Value::as_str).map(str::to_owned);
            if let Some(u) = v.get("usage") {
                apply(&mut r.usage, u);
                r.seen = true;
            }
        }
        r
    }
}

/// Reads the chunks a response was made of, as they were forwarded, until the stream of
/// copies ends (the response finished or was dropped); returns what was reported.
pub async fn read_side(chunks: impl Stream<Item = Bytes> + Unpin, sse: bool) -> Reported {
    if sse {
        let mut events = chunks
            .map(Ok::<Bytes, std::convert::Infallible>)
            .eventsource();
        let mut reported = Reported::default();
        while let Some(event) = events.next().await {
            match event {
                Ok(e) => reported.event(&e.event, &e.data),
                // A malformed stream: keep what was read; the agent sees the same bytes.
                Err(_) => break,
            }
        }
        reported
    } else {
        let mut chunks = chunks;
        let mut body = Vec::new();
        while let Some(chunk) = chunks.next().await {
            if body.len() + chunk.len() > MAX_JSON {
                return Reported::default();
            }
            body.extend_from_slice(&chunk);
        }
        Reported::json(&body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sse(events: &[(&str, &str)]) -> Vec<Bytes> {
        let text: String = events
            .iter()
            .map(|(n, d)| format!("event: {n}\ndata: {d}\n\n"))
            .collect();
        // Split at awkward places, as the network does.
        text.as_bytes()
            .chunks(7)
            .map(Bytes::copy_from_slice)
            .collect()
    }

    #[tokio::test]
    async fn stream_usage_takes_input_from_message_start_and_the_last_cumulative_delta() {
        let chunks = sse(&[
            (
                "message_start",
                r#"{"type":"message_start","message":{"model":"claude-x","usage":{"input_tokens":100,"output_tokens":1,"cache_read_input_tokens":50,"cache_creation_input_tokens":30,"cache_creation":{"ephemeral_5m_input_tokens":10,"ephemeral_1h_input_tokens":20}}}}"#,
            ),
            ("ping", r#"{"type":"ping"}"#),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","delta":{"type":"text_delta","text":"hi"}}"#,
            ),
            (
                "message_delta",
                r#"{"type":"message_delta","usage":{"output_tokens":10}}"#,
            ),
            (
                "message_delta",
                r#"{"type":"message_delta","usage":{"output_tokens":25}}"#,
            ),
            ("message_stop", r#"{"type":"message_stop"}"#),
        ]);
        let r = read_side(futures::stream::iter(chunks), true).await;
        assert!(r.seen);
        assert_eq!(r.model.as_deref(), Some("claude-x"));
        assert_eq!(
            r.usage,
            MeteredUsage {
                input_tokens: 100,
                output_tokens: 25,
                cache_read_input_tokens: 50,
                cache_creation_input_tokens: 30,
                cache_creation_1h_input_tokens: 20,
            },
            "deltas are cumulative: the last one counts, never the sum"
        );
    }

    #[tokio::test]
    async fn a_cut_stream_bills_the_last_usage_seen() {
        let mut chunks = sse(&[
            (
                "message_start",
                r#"{"type":"message_start","message":{"usage":{"input_tokens":7,"output_tokens":1}}}"#,
            ),
            (
                "message_delta",
                r#"{"type":"message_delta","usage":{"output_tokens":3}}"#,
            ),
            (
                "message_delta",
                r#"{"type":"message_delta","usage":{"output_tokens":9}}"#,
            ),
        ]);
        // The last event arrives only in part.
        let keep = chunks.len() - 3;
        chunks.truncate(keep);
        let r = read_side(futures::stream::iter(chunks), true).await;
        assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (7, 3));
    }

    #[tokio::test]
    async fn json_usage_is_read_from_the_whole_body() {
        let body = br#"{"model":"m","usage":{"input_tokens":4,"output_tokens":5}}"#;
        let chunks: Vec<Bytes> = body.chunks(5).map(Bytes::copy_from_slice).collect();
        let r = read_side(futures::stream::iter(chunks), false).await;
        assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (4, 5));
        assert_eq!(r.model.as_deref(), Some("m"));
        let none = read_side(futures::stream::iter(vec![Bytes::from("{}")]), false).await;
        assert!(!none.seen);
    }
}
