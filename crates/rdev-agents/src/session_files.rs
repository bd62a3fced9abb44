//! Files in a session directory ([`rdev_core::AgentRequest::session_dir`]), shared by both
//! adapters: a session's file path (named by a session id that passed
//! `validate_session_id`, so no name can leave the directory), reading it back, replacing
//! it atomically, and rewriting the working directory a stored conversation names into the
//! one a resumed run works in. The directory is rdev's and outside every sandbox; this
//! module never mounts it and knows no agent's file format beyond "text naming paths".

use std::{
    borrow::Cow,
    io::{Read, Write},
    path::{Path, PathBuf},
};

use rdev_core::{agent_args::validate_session_id, AgentError};

/// The largest session file kept: a transcript beyond it is not saved (and the session
/// not resumable) rather than filling the disk.
pub const MAX_SESSION_FILE: u64 = 256 * 1024 * 1024;

/// `<dir>/<session_id>.<ext>`, for a session id a build request could name.
pub fn path(dir: &Path, session_id: &str, ext: &str) -> Result<PathBuf, AgentError> {
    validate_session_id(session_id)?;
    Ok(dir.join(format!("{session_id}.{ext}")))
}

/// The stored file of `session_id`; [`AgentError::SessionNotFound`] when there is none.
pub fn read(dir: &Path, session_id: &str, ext: &str) -> Result<Vec<u8>, AgentError> {
    let file = path(dir, session_id, ext)?;
    std::fs::read(&file).map_err(|e| AgentError::SessionNotFound {
        session_id: session_id.to_owned(),
        reason: match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "this node keeps no copy of it in {} (a session resumes on the node whose \
                 data directory holds it)",
                dir.display()
            ),
            _ => format!("cannot read {}: {e}", file.display()),
        },
    })
}

/// Replaces the stored file of `session_id` with what `from` yields (at most
/// [`MAX_SESSION_FILE`] bytes), atomically: a reader sees the old file or the new one.
pub fn write(dir: &Path, session_id: &str, ext: &str, from: impl Read) -> std::io::Result<()> {
    let target = path(dir, session_id, ext).map_err(std::io::Error::other)?;
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    let copied = std::io::copy(&mut from.take(MAX_SESSION_FILE + 1), &mut tmp)?;
    if copied > MAX_SESSION_FILE {
        return Err(std::io::Error::other(format!(
            "the session file is larger than {MAX_SESSION_FILE} bytes; not kept"
        )));
    }
    tmp.flush()?;
    tmp.persist(&target).map_err(|e| e.error)?;
    Ok(())
}

/// `text` with every mention of the working directory `old` replaced by `new`, so a
/// conversation resumed in a new checkout names the files where they are now. Only a
/// sibling of `new` is replaced (rdev's checkouts of one project are siblings), and only
/// whole path components: `/w/site-1` is not replaced inside `/w/site-10`.
pub fn rewrite_workdir<'a>(text: &'a str, old: &str, new: &Path) -> Cow<'a, str> {
    let Some(new) = new.to_str() else {
        return Cow::Borrowed(text);
    };
    let old_path = Path::new(old);
    let siblings = old_path.is_absolute()
        && old_path.parent().is_some()
        && old_path.parent() == Path::new(new).parent()
        && old != new;
    if !siblings || !text.contains(old) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(old) {
        let after = &rest[at + old.len()..];
        let whole = !after
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        out.push_str(&rest[..at]);
        out.push_str(if whole { new } else { old });
        rest = after;
    }
    out.push_str(rest);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_sibling_workdirs_are_rewritten() {
        let new = Path::new("/d/work/site-2");
        let text =
            r#"{"cwd":"/d/work/site-1","file":"/d/work/site-1/a.txt","x":"/d/work/site-10"}"#;
        assert_eq!(
            rewrite_workdir(text, "/d/work/site-1", new),
            r#"{"cwd":"/d/work/site-2","file":"/d/work/site-2/a.txt","x":"/d/work/site-10"}"#
        );
        for old in ["/", "/d", "/elsewhere/site-1", "site-1", "/d/work/site-2"] {
            assert_eq!(rewrite_workdir(text, old, new), text, "{old}");
        }
    }

    #[test]
    fn files_are_named_by_valid_session_ids_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("sessions");
        assert!(path(&store, "../x", "jsonl").is_err());
        let missing = read(&store, "s-1", "jsonl").unwrap_err();
        assert_eq!(rdev_core::ErrorCode::code(&missing), "session_not_found");
        write(&store, "s-1", "jsonl", &b"one"[..]).unwrap();
        write(&store, "s-1", "jsonl", &b"two"[..]).unwrap();
        assert_eq!(read(&store, "s-1", "jsonl").unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(&store).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
    }
}
