//! Usage from the upstream's own reports, read on the side of a response that is streamed
//! to the agent unchanged: a JSON body's `usage`, or a stream's `message_start`
//! (`message.usage`: input and cache tokens) and `message_delta` events (`usage`,
//! cumulative: the last value counts, they are never added up). A [`Meter`] reads each
//! chunk as it is forwarded. What is read when the stream ends (finished, or cut by either
//! side) is what is billed. This module reads; settling is the caller's.

use std::{
    collections::VecDeque,
    convert::Infallible,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
};

use bytes::Bytes;
use eventsource_stream::EventStream;
use futures::Stream;
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

/// Reads a response's usage from its chunks as they are forwarded, on the forwarding task
/// itself: no channel, no task woken per chunk. An SSE stream goes through
/// `eventsource-stream`'s parser, driven in place: each chunk (a cheap `Bytes` clone) is
/// handed to the parser's input and the events it completes are read at once; a JSON body
/// is kept (up to 16 MiB; a bigger one is forwarded unmetered) and parsed at the end.
#[derive(Debug)]
pub struct Meter {
    kind: Kind,
    reported: Reported,
}

enum Kind {
    Sse(Box<Sse>),
    Json(Option<Vec<u8>>),
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sse(_) => f.write_str("Sse"),
            Self::Json(b) => write!(f, "Json({:?} bytes)", b.as_ref().map(Vec::len)),
        }
    }
}

/// The chunks handed to the parser and not read by it yet.
type Inbox = Arc<Mutex<VecDeque<Bytes>>>;

/// The parser's input: the chunks fed so far, then "pending". It never ends and never
/// registers a waker: the meter polls the parser itself, right after feeding it, with a
/// no-op waker, so nothing ever has to be woken.
struct Fed(Inbox);

impl Stream for Fed {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
        {
            Some(chunk) => Poll::Ready(Some(Ok(chunk))),
            None => Poll::Pending,
        }
    }
}

/// An SSE stream's parser and its input.
struct Sse {
    inbox: Inbox,
    events: EventStream<Fed>,
    /// The stream was not valid UTF-8: nothing more is read from it.
    broken: bool,
}

impl Sse {
    fn new() -> Self {
        let inbox = Inbox::default();
        Self {
            events: EventStream::new(Fed(Arc::clone(&inbox))),
            inbox,
            broken: false,
        }
    }

    /// Hands `chunk` to the parser and reads every event it completes.
    fn feed(&mut self, chunk: &Bytes, reported: &mut Reported) {
        if self.broken {
            return;
        }
        self.inbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(chunk.clone());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        loop {
            match Pin::new(&mut self.events).poll_next(&mut cx) {
                Poll::Ready(Some(Ok(event))) => reported.event(&event.event, &event.data),
                Poll::Ready(Some(Err(_))) | Poll::Ready(None) => {
                    self.broken = true;
                    return;
                }
                Poll::Pending => return,
            }
        }
    }
}

impl Meter {
    /// A meter for an SSE stream (`sse`) or a JSON body.
    pub fn new(sse: bool) -> Self {
        Self {
            kind: if sse {
                Kind::Sse(Box::new(Sse::new()))
            } else {
                Kind::Json(Some(Vec::new()))
            },
            reported: Reported::default(),
        }
    }

    /// The next chunk of the response.
    pub fn feed(&mut self, chunk: &Bytes) {
        match &mut self.kind {
            Kind::Sse(sse) => sse.feed(chunk, &mut self.reported),
            Kind::Json(body) => {
                let fits = body
                    .as_ref()
                    .is_some_and(|b| b.len() + chunk.len() <= MAX_JSON);
                match body {
                    Some(b) if fits => b.extend_from_slice(chunk),
                    _ => *body = None,
                }
            }
        }
    }

    /// What the response reported, however far it got.
    pub fn finish(self) -> Reported {
        match self.kind {
            Kind::Sse(_) => self.reported,
            Kind::Json(Some(body)) => Reported::json(&body),
            Kind::Json(None) => Reported::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    /// What a meter reads from `chunks`, fed one by one.
    fn read(chunks: Vec<Bytes>, sse: bool) -> Reported {
        let mut meter = Meter::new(sse);
        for c in &chunks {
            meter.feed(c);
        }
        meter.finish()
    }

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

    #[test]
    fn stream_usage_takes_input_from_message_start_and_the_last_cumulative_delta() {
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
        let r = read(chunks, true);
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

    #[test]
    fn a_cut_stream_bills_the_last_usage_seen() {
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
        let r = read(chunks, true);
        assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (7, 3));
    }

    #[test]
    fn json_usage_is_read_from_the_whole_body() {
        let body = br#"{"model":"m","usage":{"input_tokens":4,"output_tokens":5}}"#;
        let chunks: Vec<Bytes> = body.chunks(5).map(Bytes::copy_from_slice).collect();
        let r = read(chunks, false);
        assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (4, 5));
        assert_eq!(r.model.as_deref(), Some("m"));
        let none = read(vec![Bytes::from("{}")], false);
        assert!(!none.seen);
    }

    #[test]
    fn sse_lines_end_with_lf_or_crlf_and_events_are_read_whatever_the_chunking() {
        let text = "x".repeat(3 * 1024 * 1024);
        let body = format!(
            ": a comment\r\nevent: message_start\r\ndata: {{\"message\":\r\ndata: {{\"model\":\"m\",\"usage\":{{\"input_tokens\":3}}}}}}\r\n\r\n\
             event: content_block_delta\ndata: {{\"delta\":{{\"text\":\"{text}\"}}}}\n\n\
             data: {{\"usage\":{{\"output_tokens\":99}}}}\nevent: message_delta\n\n\
             data: {{\"usage\":{{\"output_tokens\":1000}}}}\n\n"
        );
        let mut meter = Meter::new(true);
        for chunk in body.as_bytes().chunks(4096) {
            meter.feed(&Bytes::copy_from_slice(chunk));
        }
        let r = meter.finish();
        assert_eq!(
            r.model.as_deref(),
            Some("m"),
            "data lines are joined by a newline"
        );
        assert_eq!(r.usage.input_tokens, 3);
        assert_eq!(
            r.usage.output_tokens, 99,
            "the event name may follow the data; an unnamed event is not a usage report"
        );
    }

    #[test]
    fn a_json_body_too_large_to_keep_is_not_metered() {
        let mut meter = Meter::new(false);
        meter.feed(&Bytes::from_static(br#"{"usage":{"input_tokens":4,"#));
        meter.feed(&Bytes::from(vec![b' '; MAX_JSON]));
        meter.feed(&Bytes::from_static(br#""output_tokens":5}}"#));
        assert!(!meter.finish().seen);
    }
}
