//! OpenCode sessions that outlive their run ([`AgentRequest::session_dir`]). OpenCode
//! binds a session to the directory it was created in: a prompt to it with another
//! `?directory=` still runs its tools in the first one (opencode 1.18.33, verified; a
//! removed checkout is even created again), and rdev gives every build a checkout of its
//! own. So a session is not continued across checkouts but recreated: after every run its
//! conversation is kept in the session directory as a transcript (messages in order, tool
//! calls summarised), and a run resuming it creates a new session in its own directory,
//! gives it that transcript (paths of the earlier checkout rewritten to this one) as a
//! first message that asks for no answer (`noReply`), then sends its prompt. The new
//! session's id is the run's `session_id`. This module reads and writes the kept
//! transcript and renders it; the calls are the run's.

use std::path::Path;

use rdev_core::{AgentError, AgentRequest};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::session_files;

/// The extension of a kept session in the session directory.
const EXT: &str = "json";

/// The most of one tool call's input or output a transcript keeps.
const TOOL_TEXT: usize = 2_000;

/// The most of a transcript kept: its newest part, cut at a message boundary.
const MAX_TRANSCRIPT: usize = 256 * 1024;

/// The first line of a recap; a message that starts with it is taken over as it is when
/// the session that received it is kept in turn.
const HEADER: &str = "[rdev: this build continues an earlier conversation";

/// A session as kept in the session directory.
#[derive(Debug, Serialize, Deserialize)]
struct Kept {
    /// The working directory the session ran in.
    workdir: String,
    /// Its conversation, rendered.
    transcript: String,
}

/// The first message of a session recreating `request.session_id` in `workdir`, when
/// the request keeps sessions in a session directory; `None` for a run that starts a new
/// session or continues one on the server as it is (no session directory).
/// [`AgentError::SessionNotFound`] when the directory does not keep the session.
pub fn recap(request: &AgentRequest, workdir: &Path) -> Result<Option<String>, AgentError> {
    let (Some(dir), Some(session)) = (&request.session_dir, &request.session_id) else {
        return Ok(None);
    };
    let raw = session_files::read(dir, session, EXT)?;
    let kept: Kept = serde_json::from_slice(&raw).map_err(|e| AgentError::SessionNotFound {
        session_id: session.clone(),
        reason: format!("its kept transcript is unreadable: {e}"),
    })?;
    let transcript = session_files::rewrite_workdir(&kept.transcript, &kept.workdir, workdir);
    Ok(Some(format!(
        "{HEADER} (OpenCode session {session}, made in an earlier checkout of this project; \
         the working directory is now {}). Its messages follow, oldest first, quoted; tool \
         calls are summarised.]\n{}",
        workdir.display(),
        transcript
    )))
}

/// Keeps the conversation `messages` (`GET /session/{id}/message`) of `session`, run in
/// `workdir`, in `dir`.
pub fn save(dir: &Path, session: &str, workdir: &Path, messages: &[Value]) -> std::io::Result<()> {
    let kept = Kept {
        workdir: workdir.to_string_lossy().into_owned(),
        transcript: render(messages),
    };
    let bytes = serde_json::to_vec(&kept).map_err(std::io::Error::other)?;
    session_files::write(dir, session, EXT, bytes.as_slice())
}

/// The conversation as text: each message under its role, its lines quoted (so nothing in
/// it reads as an instruction of the transcript's own), and an earlier transcript this
/// session began with taken over as it is. At most [`MAX_TRANSCRIPT`] bytes, the newest.
fn render(messages: &[Value]) -> String {
    let mut blocks: Vec<String> = Vec::new();
    for m in messages {
        let role = m
            .pointer("/info/role")
            .and_then(Value::as_str)
            .unwrap_or("?");
        let mut lines = Vec::new();
        for part in m
            .get("parts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let text = part.get("text").and_then(Value::as_str);
            match part.get("type").and_then(Value::as_str) {
                Some("text") if text.is_some_and(|t| t.starts_with(HEADER)) => {
                    blocks.extend(text.and_then(|t| t.split_once('\n')).map(|(_, b)| b.into()));
                }
                Some("text") => lines.extend(text.map(str::to_owned)),
                Some("tool") => lines.push(tool_line(part)),
                _ => {}
            }
        }
        if !lines.is_empty() {
            let quoted: Vec<String> = lines.join("\n").lines().map(|l| format!("> {l}")).collect();
            blocks.push(format!("## {role}\n{}", quoted.join("\n")));
        }
    }
    let mut out = blocks.join("\n\n");
    if out.len() > MAX_TRANSCRIPT {
        let mut cut = out.len() - MAX_TRANSCRIPT;
        while !out.is_char_boundary(cut) {
            cut += 1;
        }
        let start = out[cut..].find("\n## ").map_or(cut, |at| cut + at + 1);
        out = format!("(earlier messages cut)\n\n{}", &out[start..]);
    }
    out
}

/// One tool call: its name, input and output (or error), each shortened.
fn tool_line(part: &Value) -> String {
    let tool = part.get("tool").and_then(Value::as_str).unwrap_or("tool");
    let state = part.get("state").cloned().unwrap_or(Value::Null);
    let input = state.get("input").map(Value::to_string).unwrap_or_default();
    let output = state
        .get("output")
        .or_else(|| state.get("error"))
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
        .unwrap_or_default();
    format!("[tool {tool} {}] -> {}", shorten(&input), shorten(&output))
}

fn shorten(text: &str) -> String {
    if text.len() <= TOOL_TEXT {
        return text.to_owned();
    }
    let mut end = TOOL_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &text[..end], text.len())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn messages(first_text: &str) -> Vec<Value> {
        vec![
            json!({"info": {"role": "user", "id": "u1"}, "parts": [{"type": "text", "text": first_text}]}),
            json!({"info": {"role": "assistant", "id": "a1"}, "parts": [
                {"type": "step-start"},
                {"type": "tool", "tool": "write", "state": {"status": "completed",
                  "input": {"filePath": "/w/site-1/a.txt", "content": "hi\n"}, "output": "Wrote file successfully."}},
                {"type": "text", "text": "first done"}
            ]}),
        ]
    }

    #[test]
    fn a_kept_session_comes_back_quoted_rewritten_and_flat() {
        let dir = tempfile::tempdir().unwrap();
        save(
            dir.path(),
            "ses_a",
            Path::new("/w/site-1"),
            &messages("First\n@@write a.txt"),
        )
        .unwrap();
        let mut request = AgentRequest::new("next", "/w/site-2", Duration::from_secs(5));
        assert_eq!(recap(&request, Path::new("/w/site-2")).unwrap(), None);
        request.session_dir = Some(dir.path().to_path_buf());
        request.session_id = Some("ses_a".into());
        let text = recap(&request, Path::new("/w/site-2")).unwrap().unwrap();
        assert!(text.starts_with(HEADER) && text.contains("ses_a"), "{text}");
        assert!(
            text.contains("## user\n> First\n> @@write a.txt\n"),
            "{text}"
        );
        assert!(text.contains("> [tool write {"), "{text}");
        assert!(
            text.contains("/w/site-2/a.txt") && !text.contains("site-1"),
            "{text}"
        );
        assert!(text.contains("> first done"), "{text}");

        // The recreated session begins with that recap; kept again, it stays one level deep.
        let mut next = vec![json!({"info": {"role": "user", "id": "u0"},
            "parts": [{"type": "text", "synthetic": true, "text": text}]})];
        next.extend(messages("Second"));
        save(dir.path(), "ses_b", Path::new("/w/site-2"), &next).unwrap();
        request.session_id = Some("ses_b".into());
        let again = recap(&request, Path::new("/w/site-3")).unwrap().unwrap();
        assert_eq!(again.matches(HEADER).count(), 1, "{again}");
        assert!(
            again.contains("> First") && again.contains("> Second"),
            "{again}"
        );
        assert!(again.contains("/w/site-3/a.txt"), "{again}");

        request.session_id = Some("ses_c".into());
        let err = recap(&request, Path::new("/w/site-3")).unwrap_err();
        assert_eq!(rdev_core::ErrorCode::code(&err), "session_not_found");
    }

    #[test]
    fn long_transcripts_keep_their_newest_messages() {
        let big = "x".repeat(MAX_TRANSCRIPT);
        let mut all = messages(&big);
        all.extend(messages("the newest prompt"));
        let text = render(&all);
        assert!(text.len() <= MAX_TRANSCRIPT + 64, "{}", text.len());
        assert!(
            text.starts_with("(earlier messages cut)\n\n## "),
            "{}",
            &text[..80]
        );
        assert!(text.contains("the newest prompt"));
    }
}
