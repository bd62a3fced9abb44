//! Claude Code sessions that outlive their run ([`AgentRequest::session_dir`]). The CLI
//! keeps a session as `projects/<slug of the working directory>/<session>.jsonl` in its
//! `CLAUDE_CONFIG_DIR`, which rdev gives each working directory (so each task) afresh.
//! Before a run that resumes, the transcript is copied from the session directory to where
//! `claude --resume=<id>` looks for it in this run's config dir, with the earlier working
//! directory in it rewritten to this run's; after the run, the transcript the CLI wrote is
//! copied back. rdev does both outside the sandbox; the session directory is never mounted
//! into one, and nothing is followed through a symlink in the agent-writable config dir.

use std::{
    fs::File,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use rdev_core::{AgentError, AgentRequest};

use super::config::ClaudeCodeConfig;
use crate::session_files;

/// The extension of a transcript, in the CLI's config dir and in the session directory.
const EXT: &str = "jsonl";

/// The slug length the CLI keeps before appending a hash (claude 2.1.197).
const SLUG_MAX: usize = 200;

/// The directory name the CLI gives a working directory's sessions below `projects/`:
/// every UTF-16 unit outside `[A-Za-z0-9]` becomes `-`, and a name longer than 200 keeps
/// its first 200 and gets `-` and the absolute value of a 32-bit string hash in base 36
/// (claude 2.1.197).
pub fn project_slug(path: &str) -> String {
    let units: Vec<u16> = path.encode_utf16().collect();
    let name: String = units
        .iter()
        .map(|&u| match u8::try_from(u) {
            Ok(b) if b.is_ascii_alphanumeric() => char::from(b),
            _ => '-',
        })
        .collect();
    if name.len() <= SLUG_MAX {
        return name;
    }
    let hash = units.iter().fold(0i32, |h, &u| {
        (h << 5).wrapping_sub(h).wrapping_add(i32::from(u))
    });
    format!("{}-{}", &name[..SLUG_MAX], base36(hash.unsigned_abs()))
}

fn base36(mut n: u32) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// Where one run's sessions live: its config dir and the request's session directory.
#[derive(Debug, Clone)]
pub struct SessionFiles {
    config_dir: PathBuf,
    store: PathBuf,
    /// The working directory, canonical.
    workdir: PathBuf,
    /// The working directory as the request gave it.
    given_workdir: PathBuf,
}

impl SessionFiles {
    /// For a run with a session directory and a config dir of its own (local transport,
    /// isolated config); `None` otherwise: the CLI's own state is all there is.
    pub fn for_run(config: &ClaudeCodeConfig, request: &AgentRequest) -> Option<Self> {
        let store = request.session_dir.clone()?;
        let config_dir = config.config_dir(&request.workdir)?;
        let workdir =
            std::fs::canonicalize(&request.workdir).unwrap_or_else(|_| request.workdir.clone());
        Some(Self {
            config_dir,
            store,
            workdir,
            given_workdir: request.workdir.clone(),
        })
    }

    /// The CLI's directory for the sessions of `workdir`, made one level at a time, each
    /// level a real directory (a symlink left in the config dir is never followed).
    fn projects_dir(&self, workdir: &Path) -> std::io::Result<PathBuf> {
        let projects = self.config_dir.join("projects");
        let dir = projects.join(project_slug(&workdir.to_string_lossy()));
        for d in [&self.config_dir, &projects, &dir] {
            match std::fs::create_dir(d) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
                _ => real_dir(d)?,
            }
        }
        Ok(dir)
    }

    /// Puts the stored transcript of `session_id` where `claude --resume` finds it, with
    /// the working directory it was made in rewritten to this run's.
    pub fn restore(&self, session_id: &str) -> Result<(), AgentError> {
        let stored = session_files::read(&self.store, session_id, EXT)?;
        let text = String::from_utf8_lossy(&stored);
        let text = match first_cwd(&text) {
            Some(old) => session_files::rewrite_workdir(&text, &old, &self.workdir).into_owned(),
            None => text.into_owned(),
        };
        let spawn = |e: std::io::Error| {
            AgentError::Spawn(format!(
                "cannot place session {session_id}'s transcript: {e}"
            ))
        };
        // Under the canonical path's slug, and the path as given when that differs: the
        // CLI names the dir after the working directory it sees.
        let mut workdirs = vec![self.workdir.as_path()];
        if self.given_workdir != self.workdir {
            workdirs.push(&self.given_workdir);
        }
        for workdir in workdirs {
            let dir = self.projects_dir(workdir).map_err(spawn)?;
            let target = session_files::path(&dir, session_id, EXT)?;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&target)
                .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
                .map_err(spawn)?;
        }
        Ok(())
    }

    /// Copies the transcript the CLI wrote for `session_id` into the session directory.
    pub fn save(&self, session_id: &str) -> std::io::Result<()> {
        let file = self.written_transcript(session_id)?;
        session_files::write(&self.store, session_id, EXT, file)
    }

    /// The transcript of `session_id` in this run's config dir: under this working
    /// directory's slug, else under any slug (a CLI that names its dirs differently). Only
    /// real directories and a regular file are read: the agent could have left symlinks.
    fn written_transcript(&self, session_id: &str) -> std::io::Result<File> {
        let projects = self.config_dir.join("projects");
        real_dir(&self.config_dir)?;
        real_dir(&projects)?;
        let name = format!("{session_id}.{EXT}");
        let own = projects.join(project_slug(&self.workdir.to_string_lossy()));
        let mut candidates = vec![own.join(&name)];
        for entry in std::fs::read_dir(&projects)?.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) && entry.path() != own {
                candidates.push(entry.path().join(&name));
            }
        }
        let found = candidates
            .into_iter()
            .find(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("no transcript {name} below {}", projects.display()),
                )
            })?;
        real_dir(found.parent().unwrap_or(&projects))?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&found)?;
        if !file.metadata()?.is_file() {
            return Err(std::io::Error::other(format!(
                "{} is not a regular file",
                found.display()
            )));
        }
        Ok(file)
    }
}

/// An error unless `dir` is a directory itself, not a symlink to one.
fn real_dir(dir: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(dir)?;
    if meta.is_dir() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "{} is not a directory (a symlink is never followed)",
            dir.display()
        )))
    }
}

/// The working directory of the first transcript line that names one (`"cwd"`).
fn first_cwd(transcript: &str) -> Option<String> {
    transcript.lines().find_map(|line| {
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        value.get("cwd")?.as_str().map(str::to_owned)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_follow_the_cli() {
        assert_eq!(project_slug("/tmp/g4exp/w1"), "-tmp-g4exp-w1");
        assert_eq!(project_slug("/d/ü_x.y"), "-d---x-y");
        // What claude 2.1.197 named the dir of this working directory (seen by hand).
        let long = format!("/tmp/g4exp/{}/{}/w", "d".repeat(120), "e".repeat(100));
        let slug = project_slug(&long);
        assert_eq!(slug.len(), SLUG_MAX + "-obbzxr".len());
        assert!(
            slug.starts_with("-tmp-g4exp-ddd") && slug.ends_with("eee-obbzxr"),
            "{slug}"
        );
    }

    #[test]
    fn a_transcript_goes_out_rewritten_and_comes_back_without_following_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path().join("work");
        let (old, new) = (work.join("site-1"), work.join("site-2"));
        std::fs::create_dir_all(&new).unwrap();
        let store = tmp.path().join("sessions");
        let line = format!(
            "{{\"cwd\":\"{}\",\"file\":\"{}/a.txt\"}}\n",
            old.display(),
            old.display()
        );
        session_files::write(&store, "s-1", EXT, line.as_bytes()).unwrap();
        let files = SessionFiles {
            config_dir: tmp.path().join("cfg"),
            store: store.clone(),
            workdir: std::fs::canonicalize(&new).unwrap(),
            given_workdir: new.clone(),
        };
        files.restore("s-1").unwrap();
        let placed = files
            .config_dir
            .join("projects")
            .join(project_slug(&files.workdir.to_string_lossy()))
            .join("s-1.jsonl");
        let text = std::fs::read_to_string(&placed).unwrap();
        assert!(
            !text.contains("site-1") && text.contains("site-2/a.txt"),
            "{text}"
        );
        std::fs::write(&placed, "appended\n").unwrap();
        files.save("s-1").unwrap();
        assert_eq!(
            std::fs::read(store.join("s-1.jsonl")).unwrap(),
            b"appended\n"
        );

        // An agent that swaps its transcript for a symlink gets nothing copied.
        let secret = tmp.path().join("secret");
        std::fs::write(&secret, "key").unwrap();
        std::fs::remove_file(&placed).unwrap();
        std::os::unix::fs::symlink(&secret, &placed).unwrap();
        assert!(files.save("s-1").is_err());
        assert!(files.restore("s-1").is_err(), "nor is one written through");
        assert_eq!(std::fs::read(&secret).unwrap(), b"key");
        assert_eq!(
            std::fs::read(store.join("s-1.jsonl")).unwrap(),
            b"appended\n"
        );
        assert_eq!(
            rdev_core::ErrorCode::code(&files.restore("s-9").unwrap_err()),
            "session_not_found"
        );
    }
}
