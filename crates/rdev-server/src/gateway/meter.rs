//! Usage from the upstream's own reports, read on the side of a response that is streamed
//! to the agent unchanged: a JSON body's `usage`, or a stream's `message_start`
//! (`message.usage`: input and cache tokens) and `message_delta` events (`usage`,
//! cumulative: the last value counts, they are never added up). A [`Meter`] reads each
//! chunk as it is forwarded. What is read when the stream ends (finished, or cut by either
//! side) is what is billed. This module reads; settling is the caller's.

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

/// The longest SSE line kept while looking for usage (`message_start` and `message_delta`
/// lines are a few hundred bytes; text deltas are skipped without being kept).
const MAX_LINE: usize = 1024 * 1024;

/// Reads a response's usage from its chunks as they are forwarded, on the forwarding task
/// itself: no copy of a chunk, no channel, no task woken per chunk. An SSE stream is
/// scanned line by line and only the events that can carry usage are kept and parsed
/// (`data` lines of other named events are skipped as they pass); a JSON body is kept (up
/// to 16 MiB; a bigger one is forwarded unmetered) and parsed at the end. Lines end with
/// `\n` or `\r\n` (what Anthropic-style APIs send).
#[derive(Debug)]
pub struct Meter {
    kind: Kind,
    reported: Reported,
}

#[derive(Debug)]
enum Kind {
    Sse(Scanner),
    Json(Option<Vec<u8>>),
}

/// The state of an SSE scan between chunks.
#[derive(Debug, Default)]
struct Scanner {
    /// The current line so far (unless `skip`).
    line: Vec<u8>,
    /// The rest of the current line is not needed.
    skip: bool,
    /// The current event's name, once its `event` field was read.
    event: Option<String>,
    /// The current event's data lines, joined by `\n`.
    data: Option<Vec<u8>>,
}

impl Meter {
    /// A meter for an SSE stream (`sse`) or a JSON body.
    pub fn new(sse: bool) -> Self {
        Self {
            kind: if sse {
                Kind::Sse(Scanner::default())
            } else {
                Kind::Json(Some(Vec::new()))
            },
            reported: Reported::default(),
        }
    }

    /// The next chunk of the response.
    pub fn feed(&mut self, chunk: &[u8]) {
        match &mut self.kind {
            Kind::Sse(scanner) => scanner.feed(chunk, &mut self.reported),
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

/// Whether an event of this name can carry usage.
fn wanted(event: &str) -> bool {
    event == "message_start" || event == "message_delta"
}

impl Scanner {
    fn feed(&mut self, mut chunk: &[u8], reported: &mut Reported) {
        while let Some(i) = memchr::memchr(b'\n', chunk) {
            self.push(&chunk[..i]);
            self.end_line(reported);
            chunk = &chunk[i + 1..];
        }
        self.push(chunk);
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.skip || bytes.is_empty() {
            return;
        }
        self.line.extend_from_slice(bytes);
        // The data of an event that cannot carry usage (a text delta: most of a stream's
        // bytes) is not kept; nor is a line too long to be a usage report.
        let unwanted_data =
            self.line.starts_with(b"data") && self.event.as_deref().is_some_and(|e| !wanted(e));
        if unwanted_data || self.line.len() > MAX_LINE {
            self.skip = true;
            self.line.clear();
        }
    }

    fn end_line(&mut self, reported: &mut Reported) {
        if std::mem::take(&mut self.skip) {
            return;
        }
        let mut line = std::mem::take(&mut self.line);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.is_empty() {
            // The end of an event: dispatched when it had data, as SSE clients do.
            let event = self.event.take();
            if let Some(data) = self.data.take() {
                let name = event.as_deref().unwrap_or("message");
                if let Ok(data) = std::str::from_utf8(&data) {
                    reported.event(name, data);
                }
            }
        } else if line[0] != b':' {
            let (field, value) = match memchr::memchr(b':', &line) {
                Some(i) => {
                    let v = &line[i + 1..];
                    (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
                }
                None => (&line[..], &b""[..]),
            };
            match field {
                b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
                b"data" => {
                    let data = self.data.get_or_insert_with(Vec::new);
                    if !data.is_empty() {
                        data.push(b'\n');
                    }
                    data.extend_from_slice(value);
                }
                _ => {}
            }
        }
        line.clear();
        self.line = line;
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
    fn sse_lines_end_with_lf_or_crlf_and_text_deltas_are_not_kept() {
        let text = "x".repeat(3 * MAX_LINE);
        let body = format!(
            ": a comment\r\nevent: message_start\r\ndata: {{\"message\":\r\ndata: {{\"model\":\"m\",\"usage\":{{\"input_tokens\":3}}}}}}\r\n\r\n\
             event: content_block_delta\ndata: {{\"delta\":{{\"text\":\"{text}\"}}}}\n\n\
             data: {{\"usage\":{{\"output_tokens\":99}}}}\nevent: message_delta\n\n\
             data: {{\"usage\":{{\"output_tokens\":1000}}}}\n\n"
        );
        let mut meter = Meter::new(true);
        for chunk in body.as_bytes().chunks(4096) {
            meter.feed(chunk);
            if let Kind::Sse(scanner) = &meter.kind {
                assert!(scanner.line.len() < 8192, "a text delta is not buffered");
            }
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
        meter.feed(br#"{"usage":{"input_tokens":4,"#);
        meter.feed(&vec![b' '; MAX_JSON]);
        meter.feed(br#""output_tokens":5}}"#);
        assert!(!meter.finish().seen);
    }
}
