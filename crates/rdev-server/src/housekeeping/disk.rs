//! The disk side of housekeeping: finding and removing leftovers of crashed runs, sweeping
//! kept checkouts by age, measuring the data directory, and the lock that says whether
//! this process alone uses its data directory. Functions take the time and the thresholds
//! as arguments, so tests move time instead of waiting.

use std::{
    fs::File,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use nix::fcntl::{Flock, FlockArg};
use rdev_core::ProviderRegistry;
use tokio_util::sync::CancellationToken;

use crate::git::{CheckoutEntry, GitWorkspaces};

/// What crashed runs left behind, found by [`super::Housekeeping::find_leftovers`].
#[derive(Debug, Default)]
pub struct Leftovers {
    /// Checkouts no run released, each with its agent state.
    checkouts: Vec<(CheckoutEntry, Vec<PathBuf>)>,
    /// Agent state whose worktree is gone.
    orphaned_state: Vec<PathBuf>,
}

impl Leftovers {
    /// How many checkouts and orphaned state dirs were found.
    pub fn len(&self) -> usize {
        self.checkouts.len() + self.orphaned_state.len()
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes everything found; returns how many checkouts and state dirs went.
    pub(super) async fn remove(self, git: &GitWorkspaces) -> usize {
        let n = self.len();
        for (entry, state) in &self.checkouts {
            git.remove_checkout(entry, state).await;
        }
        for dir in &self.orphaned_state {
            if let Err(e) = tokio::fs::remove_dir_all(dir).await {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not remove");
                }
            }
        }
        n
    }
}

/// Every checkout without a kept marker, with its agents' state (named only for a real
/// worktree directory, never through a symlink), and agent state whose worktree is gone.
/// Blocking.
pub(super) fn find_leftovers(git: &GitWorkspaces, registry: &ProviderRegistry) -> Leftovers {
    let checkouts = match git.checkouts() {
        Ok(all) => all,
        Err(e) => {
            tracing::warn!(error = %e, "could not list checkouts; nothing swept at start");
            return Leftovers::default();
        }
    };
    Leftovers {
        checkouts: checkouts
            .into_iter()
            .filter(|c| c.kept_since.is_none())
            .map(|c| {
                let state = c
                    .worktree
                    .as_deref()
                    .map(|w| registry.workdir_state(w))
                    .unwrap_or_default();
                (c, state)
            })
            .collect(),
        orphaned_state: registry.orphaned_state(&git.worktrees_root()),
    }
}

/// Removes the checkouts kept after a failure whose marker is older than `keep_for` at
/// `now` (with the agent state kept with them); returns their names.
pub async fn sweep_kept(git: &GitWorkspaces, now: SystemTime, keep_for: Duration) -> Vec<String> {
    let listing = {
        let git = git.clone();
        tokio::task::spawn_blocking(move || git.checkouts()).await
    };
    let checkouts = match listing {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not list kept checkouts");
            return Vec::new();
        }
        Err(_) => return Vec::new(),
    };
    let mut removed = Vec::new();
    for entry in checkouts {
        let Some(since) = entry.kept_since else {
            continue;
        };
        if now.duration_since(since).unwrap_or_default() >= keep_for {
            git.remove_checkout(&entry, &[]).await;
            removed.push(entry.name);
        }
    }
    if !removed.is_empty() {
        tracing::info!(checkouts = ?removed, "removed failed checkouts kept for debugging");
    }
    removed
}

/// The disk space `dir` takes (allocated blocks of everything below it, symlinks not
/// followed, hard links counted per path); `None` when `stop` fired first. Files that
/// vanish while it walks are skipped. Blocking.
pub fn data_dir_size(dir: &Path, stop: &CancellationToken) -> Option<u64> {
    let mut total = 0u64;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        if stop.is_cancelled() {
            return None;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        total = total.saturating_add(meta.blocks().saturating_mul(512));
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                pending.extend(entries.flatten().map(|e| e.path()));
            }
        }
    }
    Some(total)
}

/// An exclusive lock on `<data_dir>/rdev.lock`, held for as long as this value lives.
#[derive(Debug)]
pub struct DataDirLock {
    _held: Flock<File>,
}

/// Takes the data directory's lock, creating the directory if needed; `None` when another
/// process holds it (two rdev processes on one data directory, which the start-up sweep
/// must not treat as leftovers of each other).
pub fn lock_data_dir(data_dir: &Path) -> std::io::Result<Option<DataDirLock>> {
    std::fs::create_dir_all(data_dir)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(data_dir.join("rdev.lock"))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(held) => Ok(Some(DataDirLock { _held: held })),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rdev_agents::claude_code::{ClaudeCodeAgent, ClaudeCodeConfig};

    use super::*;

    /// A registry with a Claude Code agent whose config dirs live under `state`.
    fn registry(state: &Path) -> ProviderRegistry {
        let config = ClaudeCodeConfig {
            config_root: Some(state.to_path_buf()),
            ..ClaudeCodeConfig::default()
        };
        let registry = ProviderRegistry::new();
        registry
            .register(Arc::new(ClaudeCodeAgent::new(config).unwrap()))
            .unwrap();
        registry
    }

    #[tokio::test]
    async fn start_up_sweep_removes_what_crashed_runs_left_but_not_kept_checkouts() {
        let tmp = tempfile::tempdir().unwrap();
        let (root, state) = (tmp.path().join("git"), tmp.path().join("claude"));
        let git = GitWorkspaces::new(&root);
        let registry = registry(&state);
        // A crashed run: worktree, git dir and the agent's config dir.
        std::fs::create_dir_all(root.join("work/site-crashed/src")).unwrap();
        std::fs::create_dir_all(root.join("gitdirs/site-crashed/objects")).unwrap();
        let crashed_state = registry.workdir_state(&root.join("work/site-crashed"));
        assert_eq!(crashed_state.len(), 1);
        std::fs::create_dir_all(crashed_state[0].join("projects")).unwrap();
        // Half-removed: only the git dir is left.
        std::fs::create_dir_all(root.join("gitdirs/site-half")).unwrap();
        // An older rdev removed the worktree but never the config dir.
        std::fs::create_dir_all(root.join("work/site-gone")).unwrap();
        let orphan = registry.workdir_state(&root.join("work/site-gone"));
        std::fs::create_dir_all(&orphan[0]).unwrap();
        std::fs::remove_dir(root.join("work/site-gone")).unwrap();
        // A failed run kept for debugging, with its config dir.
        std::fs::create_dir_all(root.join("work/site-kept")).unwrap();
        let kept_state = registry.workdir_state(&root.join("work/site-kept"));
        std::fs::create_dir_all(&kept_state[0]).unwrap();
        std::fs::create_dir_all(root.join("kept")).unwrap();
        std::fs::write(
            root.join("kept/site-kept"),
            format!("{}\n", kept_state[0].display()),
        )
        .unwrap();

        let found = find_leftovers(&git, &registry);
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(found.remove(&git).await, 3);
        for gone in [
            root.join("work/site-crashed"),
            root.join("gitdirs/site-crashed"),
            crashed_state[0].clone(),
            root.join("gitdirs/site-half"),
            orphan[0].clone(),
        ] {
            assert!(!gone.exists(), "{} is swept", gone.display());
        }
        let kept = git.checkouts().unwrap();
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(kept[0].name, "site-kept");
        assert!(kept_state[0].is_dir());

        // The kept one goes once it is older than the setting, with its config dir.
        let keep_for = Duration::from_secs(24 * 3600);
        let now = SystemTime::now();
        assert!(sweep_kept(&git, now, keep_for).await.is_empty());
        let later = now + keep_for + Duration::from_secs(60);
        assert_eq!(sweep_kept(&git, later, keep_for).await, ["site-kept"]);
        assert_eq!(git.checkouts().unwrap(), []);
        assert!(!kept_state[0].exists() && !root.join("kept/site-kept").exists());
    }

    #[test]
    fn size_counts_files_below_and_stops_when_asked() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("a/b")).unwrap();
        std::fs::write(tmp.path().join("a/b/blob"), vec![7u8; 256 * 1024]).unwrap();
        let size = data_dir_size(tmp.path(), &CancellationToken::new()).unwrap();
        assert!(size >= 256 * 1024, "{size}");
        let stopped = CancellationToken::new();
        stopped.cancel();
        assert_eq!(data_dir_size(tmp.path(), &stopped), None);
    }

    #[test]
    fn a_data_dir_is_locked_by_one_holder_at_a_time() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let first = lock_data_dir(&dir).unwrap().expect("free");
        assert!(lock_data_dir(&dir).unwrap().is_none(), "held");
        drop(first);
        assert!(lock_data_dir(&dir).unwrap().is_some(), "released");
    }
}
