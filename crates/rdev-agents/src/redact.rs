//! [`EventRedactor`]: applies `rdev_core::Redactor` (which knows a secret's plain, base64,
//! percent- and JSON-escaped forms) to every string in the agent events and results that
//! leave the adapter. An agent can print its environment through a tool at any time, so the
//! stream itself must be scrubbed. This module only chooses which values count and walks
//! the event shapes; the matching is core's.

use std::borrow::Cow;

use rdev_core::{AgentEvent, AgentResult};

/// Values shorter than this are not treated as secrets: env such as `CLAUDE_CODE_MAX_RETRIES
/// = 0` or `DEBUG=1` would otherwise replace every `0` or `1` in the transcript.
pub const MIN_SECRET_LEN: usize = 6;

/// Redacts one run's secret values from its events.
#[derive(Debug, Clone, Default)]
pub struct EventRedactor {
    inner: rdev_core::Redactor,
}

impl EventRedactor {
    /// A redactor for `values`; those shorter than [`MIN_SECRET_LEN`] are ignored.
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let inner =
            rdev_core::Redactor::new(values.into_iter().filter(|v| v.len() >= MIN_SECRET_LEN));
        Self { inner }
    }

    /// Redacts `s` in place; a string without a secret is not copied.
    pub fn string(&self, s: &mut String) {
        if let Cow::Owned(r) = self.inner.redact_cow(s) {
            *s = r;
        }
    }

    /// A redacted copy of `s`.
    pub fn text(&self, s: &str) -> String {
        self.inner.redact(s)
    }

    /// Redacts the text of `result`.
    pub fn result(&self, r: &mut AgentResult) {
        self.string(&mut r.output);
    }

    /// Redacts every string in `event`.
    pub fn event(&self, event: &mut AgentEvent) {
        if self.inner.is_empty() {
            return;
        }
        match event {
            AgentEvent::Started { .. } | AgentEvent::Usage(_) => {}
            AgentEvent::Message { text, .. } => self.string(text),
            AgentEvent::ToolUse { input, .. } => self.inner.redact_json(input),
            AgentEvent::ToolResult { output, .. } => self.string(output),
            AgentEvent::Error { message } => self.string(message),
            AgentEvent::Raw { value } => self.inner.redact_json(value),
            AgentEvent::Completed(r) => self.result(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn redacts_strings_in_every_event_kind_and_ignores_short_values() {
        let r = EventRedactor::new(["sk-ant-123456", "sk-ant-123456-long", "0"]);
        let mut ev = AgentEvent::ToolUse {
            id: "1".into(),
            name: "Bash".into(),
            input: json!({"command": "echo sk-ant-123456-long and sk-ant-123456 0"}),
        };
        r.event(&mut ev);
        let AgentEvent::ToolUse { input, .. } = ev else {
            unreachable!()
        };
        assert_eq!(input["command"], "echo [redacted] and [redacted] 0");
        let mut msg = AgentEvent::Error {
            message: "key=sk-ant-123456".into(),
        };
        r.event(&mut msg);
        assert_eq!(
            msg,
            AgentEvent::Error {
                message: "key=[redacted]".into()
            }
        );
        assert!(!format!("{r:?}").contains("sk-ant"));
    }
}
