//! The gateway's private directory for its Unix socket (`rdev-gw-*` in the system's
//! temporary directory), and the sweep that removes the ones killed rdev processes left.
//! A live gateway holds an exclusive `flock` on the directory's `.lock` from before it
//! binds its socket until the directory is removed, so the lock, which goes with the
//! process, tells a live directory from a leftover; an rdev that predates the lock is told
//! by its socket, which accepts while its gateway runs. The sweep never removes a directory
//! whose lock is held or whose socket answers, so another running rdev's stays.

use std::{
    fs::File,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use nix::fcntl::{Flock, FlockArg};

/// How every socket directory's name starts.
pub const PREFIX: &str = "rdev-gw-";
/// The socket's file name in the directory.
pub const SOCKET: &str = "gw.sock";
/// The lock file.
const LOCK: &str = ".lock";
/// A directory without a socket may be a gateway between creating it and binding: only
/// one older than this is a leftover.
const UNBOUND_GRACE: Duration = Duration::from_secs(60);

/// A gateway's socket directory, locked; removed when dropped.
#[derive(Debug)]
pub struct SocketDir {
    // Dropped in this order: the directory is removed while it is still locked.
    dir: tempfile::TempDir,
    _lock: Flock<File>,
}

impl SocketDir {
    /// A fresh private (0700) directory under `root`, locked.
    pub fn new_in(root: &Path) -> std::io::Result<Self> {
        let dir = tempfile::Builder::new().prefix(PREFIX).tempdir_in(root)?;
        let file = File::create(dir.path().join(LOCK))?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| e)?;
        Ok(Self { dir, _lock: lock })
    }

    /// Where the socket goes.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join(SOCKET)
    }
}

/// Removes the socket directories under `root` (the system's temporary directory in
/// production) that no running gateway owns: directories of this user, not locked, whose
/// socket does not accept a connection (or, without a socket, older than a minute).
/// Returns what it removed. Blocking; symlinks are never followed.
pub fn sweep(root: &Path, now: SystemTime) -> Vec<PathBuf> {
    rdev_agents::sandbox::sweep_locked_dirs(root, PREFIX, LOCK, "gateway socket", |dir, meta| {
        let socket = dir.join(SOCKET);
        match std::fs::symlink_metadata(&socket) {
            Ok(_) => std::os::unix::net::UnixStream::connect(&socket).is_err(),
            Err(_) => meta
                .modified()
                .is_ok_and(|m| now.duration_since(m).unwrap_or_default() > UNBOUND_GRACE),
        }
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    #[test]
    fn only_directories_no_live_gateway_owns_are_swept() {
        let root = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let live = SocketDir::new_in(root.path()).unwrap();
        let _bound = UnixListener::bind(live.socket()).unwrap();
        // A killed rdev's: the lock file is there, its lock went with the process, and
        // nothing listens on the socket any more.
        let killed = root.path().join(format!("{PREFIX}killed"));
        std::fs::create_dir(&killed).unwrap();
        std::fs::write(killed.join(LOCK), "").unwrap();
        drop(UnixListener::bind(killed.join(SOCKET)).unwrap());
        // An rdev from before the lock: one still running (its socket accepts), one gone.
        let old_running = root.path().join(format!("{PREFIX}old-running"));
        std::fs::create_dir(&old_running).unwrap();
        let _old = UnixListener::bind(old_running.join(SOCKET)).unwrap();
        let old_gone = root.path().join(format!("{PREFIX}old-gone"));
        std::fs::create_dir(&old_gone).unwrap();
        drop(UnixListener::bind(old_gone.join(SOCKET)).unwrap());
        // Not yet bound: left alone for a minute.
        let unbound = root.path().join(format!("{PREFIX}unbound"));
        std::fs::create_dir(&unbound).unwrap();
        let other = root.path().join("rdev-sandbox-x");
        std::fs::create_dir(&other).unwrap();
        let target = tempfile::tempdir().unwrap();
        let link = root.path().join(format!("{PREFIX}link"));
        std::os::unix::fs::symlink(target.path(), &link).unwrap();

        let mut want = vec![killed, old_gone];
        want.sort();
        assert_eq!(sweep(root.path(), now), want);
        for kept in [
            live.socket(),
            old_running.clone(),
            unbound.clone(),
            other,
            link,
        ] {
            assert!(kept.exists(), "{} is kept", kept.display());
        }
        assert!(target.path().is_dir());
        let later = now + UNBOUND_GRACE + Duration::from_secs(1);
        assert_eq!(sweep(root.path(), later), [unbound]);
        assert!(live.socket().exists() && old_running.exists());
        let dir = live.dir.path().to_path_buf();
        drop(live);
        assert!(!dir.exists());
    }
}
