//! A sandboxed run's scratch directory on the host (its `HOME` and `/tmp`), and the sweep
//! that removes scratch directories a crashed rdev left in the temporary directory. A live
//! scratch holds an exclusive `flock` on its `.lock` file for as long as it exists, so a
//! sweep (by this process or another rdev on the machine) tells a live one from a leftover
//! without guessing from its age alone: the lock goes with the process that held it. The
//! agent never sees `.lock`: only `home/` and `tmp/` are mounted into the sandbox.

use std::{
    fs::File,
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
    time::SystemTime,
};

use nix::fcntl::{Flock, FlockArg};

use super::SandboxError;

/// How every scratch directory's name starts (in the system's temporary directory).
pub const SCRATCH_PREFIX: &str = "rdev-sandbox-";

/// The lock file inside a scratch directory.
const LOCK: &str = ".lock";

/// A run's throw-away `HOME` and `/tmp` on the host, removed when dropped.
#[derive(Debug)]
pub struct Scratch {
    // Dropped in this order: the directory is removed while it is still locked.
    dir: tempfile::TempDir,
    _lock: Flock<File>,
}

impl Scratch {
    /// Makes a fresh, private (0700), locked scratch directory in the system's temporary
    /// directory.
    pub fn new() -> Result<Self, SandboxError> {
        Self::new_in(&std::env::temp_dir())
    }

    /// The same under `root`.
    pub fn new_in(root: &Path) -> Result<Self, SandboxError> {
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            SandboxError(format!("cannot create the sandbox's {what}: {e}"))
        };
        let dir = tempfile::Builder::new()
            .prefix(SCRATCH_PREFIX)
            .tempdir_in(root)
            .map_err(|e| failed("scratch dir", &e))?;
        let file = File::create(dir.path().join(LOCK)).map_err(|e| failed("lock file", &e))?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| failed("lock", &e))?;
        for sub in ["home", "tmp"] {
            std::fs::create_dir(dir.path().join(sub)).map_err(|e| failed(sub, &e))?;
        }
        Ok(Self { dir, _lock: lock })
    }

    /// The scratch directory itself.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(super) fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub(super) fn tmp(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }
}

/// Removes the scratch directories under `root` (the system's temporary directory in
/// production) whose run is over: a directory of this user, last changed before
/// `older_than` (the caller passes now minus the longest possible run), and not locked by
/// a live run. Returns what it removed. Blocking; symlinks are never followed.
pub fn sweep_scratch(root: &Path, older_than: SystemTime) -> Vec<PathBuf> {
    sweep_locked_dirs(root, SCRATCH_PREFIX, LOCK, "sandbox scratch", |_, meta| {
        meta.modified().is_ok_and(|m| m < older_than)
    })
}

/// Removes the directories under `root` named `<prefix>...` that belong to this user, that
/// `leftover` (given the directory and its metadata) says are no longer used, and whose
/// `<lock>` file is not held by a live owner (held here while the directory goes; a
/// directory without one is from before locking). The one sweep behind the sandbox's
/// scratch directories and the gateway's socket directories. Blocking; symlinks are never
/// followed. Returns what it removed, sorted.
pub fn sweep_locked_dirs(
    root: &Path,
    prefix: &str,
    lock: &str,
    what: &str,
    leftover: impl Fn(&Path, &std::fs::Metadata) -> bool,
) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let me = nix::unistd::geteuid().as_raw();
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let named = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(prefix));
        let dir = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&dir) else {
            continue;
        };
        if !(named && meta.is_dir() && meta.uid() == me) {
            continue;
        }
        let lock = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(dir.join(lock));
        let _held = match lock {
            Ok(file) => match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(held) => Some(held),
                Err(_) => continue,
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(_) => continue,
        };
        if !leftover(&dir, &meta) {
            continue;
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => removed.push(dir),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove a stale {what} dir")
            }
        }
    }
    removed.sort();
    removed
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn set_mtime(dir: &Path, t: SystemTime) {
        File::open(dir).unwrap().set_modified(t).unwrap();
    }

    #[test]
    fn only_old_unlocked_scratch_dirs_of_this_user_are_swept() {
        let root = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let day_ago = now - Duration::from_secs(24 * 3600);
        let live = Scratch::new_in(root.path()).unwrap();
        assert!(live.home().is_dir() && live.tmp().is_dir());
        set_mtime(live.path(), day_ago);
        // A crashed run's scratch: its lock file is there, its lock went with its process.
        let crashed_dir = root.path().join(format!("{SCRATCH_PREFIX}crashed"));
        std::fs::create_dir_all(crashed_dir.join("tmp")).unwrap();
        std::fs::write(crashed_dir.join(LOCK), "").unwrap();
        set_mtime(&crashed_dir, day_ago);
        let no_lock = root.path().join(format!("{SCRATCH_PREFIX}old"));
        std::fs::create_dir_all(no_lock.join("home/.npm")).unwrap();
        set_mtime(&no_lock, day_ago);
        let young = root.path().join(format!("{SCRATCH_PREFIX}young"));
        std::fs::create_dir(&young).unwrap();
        let other = root.path().join("someone-else");
        std::fs::create_dir(&other).unwrap();
        set_mtime(&other, day_ago);
        let target = tempfile::tempdir().unwrap();
        let link = root.path().join(format!("{SCRATCH_PREFIX}link"));
        std::os::unix::fs::symlink(target.path(), &link).unwrap();

        let hour_ago = now - Duration::from_secs(3600);
        let mut want = vec![crashed_dir, no_lock];
        want.sort();
        assert_eq!(sweep_scratch(root.path(), hour_ago), want);
        assert!(live.path().is_dir(), "a locked scratch is in use");
        assert!(young.is_dir() && other.is_dir() && link.exists());
        // However old it looks, a live scratch stays.
        assert_eq!(
            sweep_scratch(root.path(), now + Duration::from_secs(60)),
            [young]
        );
        assert!(live.path().is_dir() && target.path().is_dir());
        let dir = live.path().to_path_buf();
        drop(live);
        assert!(!dir.exists());
    }
}
