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

use bytes::{Bytes, BytesMut};
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
    /// The response could not be read to its end (a JSON body over 16 MiB, a usage event
    /// with a line over 64 KiB, a stream that is not UTF-8): what it used is unknown, so it
    /// is billed at its worst case, never as free.
    pub unreadable: bool,
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
    /// Whether an SSE event of this name can report usage.
    fn is_usage(name: &str) -> bool {
        name == "message_start" || name == "message_delta"
    }

    /// One SSE event of a Messages stream.
    pub fn event(&mut self, name: &str, data: &str) {
        if !Self::is_usage(name) {
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
/// `eventsource-stream`'s parser, driven in place: each whole line (a cheap `Bytes` slice)
/// is handed to the parser's input and the events it completes are read at once; a JSON
/// body is kept (up to 16 MiB; a bigger one is forwarded unread) and parsed at the end.
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

/// The longest SSE line handed to the parser. A usage report (`message_start`,
/// `message_delta`) is a few hundred bytes; text deltas can be megabytes, and are not read.
/// A longer `data` line is skipped as it passes (nothing of it is kept) and the parser gets
/// [`ELIDED`] in its place, so the event keeps its shape; if that event turns out to be a
/// usage report, the stream is unreadable. A longer line of any other field makes the
/// stream unreadable at once; a longer comment is skipped.
const MAX_LINE: usize = 64 * 1024;

/// What the parser gets for a skipped `data` line (before its line end): never empty, so
/// its event is always dispatched and the skip is known to belong to that event.
const ELIDED: &[u8] = b"data:\xe2\x80\xa6";

/// An SSE stream's parser and its input.
struct Sse {
    inbox: Inbox,
    events: EventStream<Fed>,
    /// The start of a line whose end has not arrived yet (at most [`MAX_LINE`] bytes).
    partial: BytesMut,
    /// The line being read is over [`MAX_LINE`]: what the parser gets at its end instead
    /// (before the line end).
    skipping: Option<&'static [u8]>,
    /// A line of the event being read was skipped.
    elided: bool,
    /// The stream is not valid UTF-8, or a line that had to be read was too long: nothing
    /// more is read, and the call is billed at its worst case.
    unreadable: bool,
}

impl Sse {
    fn new() -> Self {
        let inbox = Inbox::default();
        Self {
            events: EventStream::new(Fed(Arc::clone(&inbox))),
            inbox,
            partial: BytesMut::new(),
            skipping: None,
            elided: false,
            unreadable: false,
        }
    }

    /// Reads `chunk`. The parser searches its whole buffer again for each piece it is given
    /// and copies what follows each line it takes, which is quadratic in an event's size (a
    /// 3 MiB event in 4 KiB chunks took a minute) and in the lines per piece; so it is given
    /// one whole line at a time, a slice of the chunk or the line's parts joined once.
    fn feed(&mut self, chunk: &Bytes, reported: &mut Reported) {
        let mut start = 0;
        for end in memchr::memchr2_iter(b'\n', b'\r', chunk) {
            if self.unreadable {
                return;
            }
            if self.skipping.is_none() && self.partial.len() + (end - start) > MAX_LINE {
                self.skip(&chunk[start..end]);
                if self.unreadable {
                    return;
                }
            }
            let line = match self.skipping.take() {
                Some(instead) => {
                    self.elided = true;
                    let mut line = BytesMut::from(instead);
                    line.extend_from_slice(&chunk[end..=end]);
                    line.freeze()
                }
                None if self.partial.is_empty() => chunk.slice(start..=end),
                None => {
                    self.partial.extend_from_slice(&chunk[start..=end]);
                    self.partial.split().freeze()
                }
            };
            start = end + 1;
            self.parse(line, reported);
        }
        let rest = &chunk[start..];
        if self.unreadable || self.skipping.is_some() {
            return;
        }
        if self.partial.len() + rest.len() > MAX_LINE {
            self.skip(rest);
        } else {
            self.partial.extend_from_slice(rest);
        }
    }

    /// The line begun in `partial` and continued by `more` is too long to read: decides
    /// what the parser gets instead, by the line's field.
    fn skip(&mut self, more: &[u8]) {
        let head: Vec<u8> = self.partial.iter().chain(more).take(5).copied().collect();
        self.partial.clear();
        if head.starts_with(b"data:") {
            self.skipping = Some(ELIDED);
        } else if head.starts_with(b":") {
            self.skipping = Some(b":");
        } else {
            self.unreadable = true;
        }
    }

    /// Hands `line` to the parser and reads every event it completes.
    fn parse(&mut self, line: Bytes, reported: &mut Reported) {
        // The parser's UTF-8 step takes an invalid byte for a character still arriving and
        // keeps it, and everything after it, waiting: checked here, line by line (a line
        // ends at an ASCII byte, so a whole line is valid on its own).
        if std::str::from_utf8(&line).is_err() {
            self.unreadable = true;
            return;
        }
        self.inbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(line);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        loop {
            match Pin::new(&mut self.events).poll_next(&mut cx) {
                Poll::Ready(Some(Ok(event))) => {
                    if std::mem::take(&mut self.elided) && Reported::is_usage(&event.event) {
                        self.unreadable = true;
                        return;
                    }
                    reported.event(&event.event, &event.data);
                }
                Poll::Ready(Some(Err(_))) | Poll::Ready(None) => {
                    self.unreadable = true;
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
            Kind::Sse(sse) => Reported {
                unreadable: sse.unreadable,
                ..self.reported
            },
            Kind::Json(Some(body)) => Reported::json(&body),
            Kind::Json(None) => Reported {
                unreadable: true,
                ..Reported::default()
            },
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
    fn sse_lines_end_with_lf_cr_or_crlf_and_events_are_read_whatever_the_chunking() {
        let body = |text: &str| {
            format!(
                ": a comment\r\nevent: message_start\r\ndata: {{\"message\":\r\ndata: {{\"model\":\"m\",\"usage\":{{\"input_tokens\":3}}}}}}\r\n\r\n\
                 event: content_block_delta\ndata: {{\"delta\":{{\"text\":\"{text}\"}}}}\n\n\
                 data: {{\"usage\":{{\"output_tokens\":99}}}}\revent: message_delta\r\r\
                 data: {{\"usage\":{{\"output_tokens\":1000}}}}\n\n"
            )
        };
        // One 3 MiB event in 4 KiB chunks (it once took the parser a minute), and a small
        // stream byte by byte, so every line end is split from its line, and CR from LF.
        let big = body(&"x".repeat(3 * 1024 * 1024));
        for (body, size) in [(big.as_str(), 4096), (&body("hi"), 1)] {
            let mut meter = Meter::new(true);
            for chunk in body.as_bytes().chunks(size) {
                meter.feed(&Bytes::copy_from_slice(chunk));
            }
            let r = meter.finish();
            assert!(!r.unreadable);
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
    }

    #[test]
    fn a_json_body_too_large_to_keep_is_unreadable() {
        let mut meter = Meter::new(false);
        meter.feed(&Bytes::from_static(br#"{"usage":{"input_tokens":4,"#));
        meter.feed(&Bytes::from(vec![b' '; MAX_JSON]));
        meter.feed(&Bytes::from_static(br#""output_tokens":5}}"#));
        let r = meter.finish();
        assert!(!r.seen);
        assert!(r.unreadable, "billed at its worst case, never as free");
    }

    /// What a meter reads from `parts` joined, in chunks of `size` bytes.
    fn read_sse(parts: &[&[u8]], size: usize) -> Reported {
        let body = parts.concat();
        read(
            body.chunks(size).map(Bytes::copy_from_slice).collect(),
            true,
        )
    }

    #[test]
    fn a_long_line_is_skipped_unless_a_usage_report_needs_it() {
        let long = vec![b'x'; 3 * MAX_LINE];
        let start: &[u8] =
            b"event: message_start\ndata: {\"message\":{\"usage\":{\"input_tokens\":7}}}\n\n";
        let delta: &[u8] =
            b"event: message_delta\r\ndata: {\"usage\":{\"output_tokens\":9}}\r\n\r\n";
        for size in [1000, 4096, 100_000] {
            // A text delta's long data line (and a long comment) are skipped, never kept.
            let r = read_sse(
                &[
                    start,
                    b"event: content_block_delta\r\ndata: ",
                    &long,
                    b"\r\n:",
                    &long,
                    b"\r\n\r\n",
                    delta,
                ],
                size,
            );
            assert!(!r.unreadable, "chunks of {size}");
            assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (7, 9));
            // The same line in a usage report: what it used is unknown.
            let r = read_sse(
                &[
                    start,
                    b"event: message_delta\ndata: ",
                    &long,
                    b"\n\n",
                    delta,
                ],
                size,
            );
            assert!(r.unreadable, "chunks of {size}");
            assert_eq!(r.usage.input_tokens, 7, "what came before is kept");
            // A long line of another field.
            let r = read_sse(&[start, b"event: ", &long, b"\n\n", delta], size);
            assert!(r.unreadable, "chunks of {size}");
        }
    }

    #[test]
    fn a_stream_that_is_not_utf8_is_unreadable() {
        let r = read_sse(
            &[
                b"event: message_delta\ndata: \xff\n\n",
                b"event: message_delta\ndata: {\"usage\":{\"output_tokens\":1}}\n\n",
            ],
            7,
        );
        assert!(r.unreadable);
        assert!(!r.seen);
    }
}
