//! How task checkouts end: removed together with the agent's state for that worktree when
//! the task is done, or kept after a failure so someone can look at what the agent did,
//! with a marker `kept/<name>` whose modification time says since when and whose lines name
//! the agent state kept with it. It also lists what is on disk, so the server's
//! housekeeping can sweep kept checkouts once they are old enough and, at start-up, the
//! leftovers of runs that crashed. It knows the layout; when to sweep is the caller's
//! choice. Nothing here trusts a path read from a worktree: markers live outside `work/`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::SystemTime,
};

use super::{
    workspaces::{GIT_DIRS, WORKTREES},
    GitWorkspaces, Workspace,
};

/// Where the markers of kept checkouts live, under the root.
const KEPT: &str = "kept";

/// A task checkout found on disk by [`GitWorkspaces::checkouts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutEntry {
    /// The checkout's name (`<project>-<task id>-<random>`).
    pub name: String,
    /// The worktree, when it is still there as a real directory (not a symlink): the path
    /// an agent ran in, whose state [`rdev_core::CodeAgent::workdir_state`] names.
    pub worktree: Option<PathBuf>,
    /// When the checkout was kept after a failure; `None` when no run released it: it is
    /// in use, or its run crashed.
    pub kept_since: Option<SystemTime>,
    /// The agent state recorded with a kept checkout.
    pub agent_state: Vec<PathBuf>,
}

/// Removes `paths` in order, logging what cannot be removed (a missing path is fine).
async fn remove_all(paths: &[PathBuf]) {
    for path in paths {
        let removed = match tokio::fs::symlink_metadata(path).await {
            Err(_) => Ok(()),
            Ok(m) if m.is_dir() => tokio::fs::remove_dir_all(path).await,
            Ok(_) => tokio::fs::remove_file(path).await,
        };
        match removed {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %path.display(), error = %e, "could not remove");
            }
            _ => {}
        }
    }
}

/// The names in `dir` (none when it does not exist), leaving out our own temporary files.
fn names(dir: &Path) -> std::io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other?,
    };
    let mut out = Vec::new();
    for entry in entries {
        if let Some(name) = entry?.file_name().to_str() {
            if !name.starts_with('.') {
                out.push(name.to_owned());
            }
        }
    }
    Ok(out)
}

impl GitWorkspaces {
    fn kept_marker(&self, name: &str) -> PathBuf {
        self.root.join(KEPT).join(name)
    }

    /// What goes when a checkout goes, in order: the agent's state, the git dir, the
    /// worktree, the marker. The worktree and the marker come last, so an interrupted
    /// removal leaves something the next sweep finds.
    fn removal(&self, name: &str, agent_state: &[PathBuf]) -> Vec<PathBuf> {
        let dirs = self.task_checkout(name);
        let mut paths = agent_state.to_vec();
        paths.extend([dirs.git_dir, dirs.tree, self.kept_marker(name)]);
        paths
    }

    /// Deletes a task's checkout and `agent_state` (the agent's state for its worktree,
    /// computed before the agent ran) in the background, like [`GitWorkspaces::remove`].
    pub fn remove_with(&self, ws: Workspace, agent_state: Vec<PathBuf>) {
        let Some(name) = ws.dir.file_name().and_then(|n| n.to_str()) else {
            return;
        };
        let paths = self.removal(name, &agent_state);
        self.background
            .spawn(async move { remove_all(&paths).await });
    }

    /// Leaves a failed task's checkout and `agent_state` on disk for debugging and marks
    /// them kept, so [`GitWorkspaces::checkouts`] reports them with the time they were kept
    /// and the housekeeping sweep removes them once they are old enough. If the marker
    /// cannot be written, the checkout is removed instead: one that nobody would sweep
    /// must not stay.
    pub async fn keep(&self, ws: Workspace, agent_state: Vec<PathBuf>) {
        let Some(name) = ws.dir.file_name().and_then(|n| n.to_str()) else {
            return;
        };
        let marker = self.kept_marker(name);
        let tmp = marker.with_file_name(format!(".{name}.tmp"));
        let mut lines = String::new();
        for dir in &agent_state {
            if let Some(dir) = dir.to_str().filter(|d| !d.contains('\n')) {
                lines.push_str(dir);
                lines.push('\n');
            }
        }
        let written = async {
            tokio::fs::create_dir_all(marker.parent().expect("a marker has a parent")).await?;
            tokio::fs::write(&tmp, lines).await?;
            tokio::fs::rename(&tmp, &marker).await
        }
        .await;
        match written {
            Ok(()) => tracing::info!(
                worktree = %ws.dir.display(),
                git_dir = %ws.git_dir.display(),
                agent_state = ?agent_state,
                "kept the failed task's checkout for debugging"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "could not mark the checkout kept; removing it");
                let _ = tokio::fs::remove_file(&tmp).await;
                self.remove_with(ws, agent_state);
            }
        }
    }

    /// Every task checkout on disk: whatever has a worktree, a git dir or a kept marker.
    /// Blocking (it reads directories); call it from a blocking context.
    pub fn checkouts(&self) -> std::io::Result<Vec<CheckoutEntry>> {
        let mut found: BTreeMap<String, CheckoutEntry> = BTreeMap::new();
        for dir in [WORKTREES, GIT_DIRS, KEPT] {
            for name in names(&self.root.join(dir))? {
                found.entry(name.clone()).or_insert_with(|| CheckoutEntry {
                    name,
                    worktree: None,
                    kept_since: None,
                    agent_state: Vec::new(),
                });
            }
        }
        for entry in found.values_mut() {
            let tree = self.task_checkout(&entry.name).tree;
            if std::fs::symlink_metadata(&tree).is_ok_and(|m| m.is_dir()) {
                entry.worktree = Some(tree);
            }
            let marker = self.kept_marker(&entry.name);
            if let Ok(meta) = std::fs::metadata(&marker) {
                entry.kept_since = Some(meta.modified()?);
                entry.agent_state = std::fs::read_to_string(&marker)?
                    .lines()
                    .map(PathBuf::from)
                    .filter(|p| p.is_absolute())
                    .collect();
            }
        }
        Ok(found.into_values().collect())
    }

    /// Removes a checkout found by [`GitWorkspaces::checkouts`] with its recorded agent
    /// state and `more_state`, now (not in the background).
    pub async fn remove_checkout(&self, entry: &CheckoutEntry, more_state: &[PathBuf]) {
        let mut state = entry.agent_state.clone();
        state.extend(more_state.iter().cloned());
        remove_all(&self.removal(&entry.name, &state)).await;
    }

    /// The directory every task worktree lives in (agents' per-worktree state is keyed by
    /// paths under it).
    pub fn worktrees_root(&self) -> PathBuf {
        self.root.join(WORKTREES)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rdev_core::TaskId;

    use super::*;
    use crate::git::{fixtures::World, GitEnv};

    #[tokio::test]
    async fn a_kept_checkout_is_listed_with_its_state_and_removed_with_it() {
        let world = World::new(true).await;
        let ws_root = &world.workspaces;
        let env = GitEnv::default();
        let state = world.tmp.path().join("agent-state");
        std::fs::create_dir_all(state.join("projects")).unwrap();

        let done = world.checkout("site", TaskId::new(), &env).await;
        let failed = world.checkout("site", TaskId::new(), &env).await;
        let (done_dir, failed_dir) = (done.dir.clone(), failed.dir.clone());
        let failed_git = failed.git_dir.clone();
        let before = SystemTime::now() - Duration::from_secs(1);
        ws_root.remove(done);
        ws_root.keep(failed, vec![state.clone()]).await;
        ws_root.settled().await;
        assert!(!done_dir.exists());
        assert!(failed_dir.join("README.md").is_file() && failed_git.is_dir());

        let listed = ws_root.checkouts().unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        let kept = &listed[0];
        assert_eq!(kept.worktree.as_deref(), Some(failed_dir.as_path()));
        assert_eq!(kept.agent_state, std::slice::from_ref(&state));
        assert!(kept.kept_since.unwrap() >= before);

        ws_root.remove_checkout(kept, &[]).await;
        assert!(!failed_dir.exists() && !failed_git.exists() && !state.exists());
        assert_eq!(ws_root.checkouts().unwrap(), []);
    }

    #[tokio::test]
    async fn leftovers_of_any_half_are_listed_and_a_symlinked_worktree_is_not_followed() {
        let world = World::new(true).await;
        let root = &world.root;
        let outside = world.tmp.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::create_dir_all(root.join("gitdirs/only-git")).unwrap();
        std::fs::create_dir_all(root.join("work/only-tree")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("work/link")).unwrap();
        std::fs::create_dir_all(root.join("kept")).unwrap();
        std::fs::write(root.join("kept/.partial.tmp"), "").unwrap();

        let listed = world.workspaces.checkouts().unwrap();
        let names: Vec<&str> = listed.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["link", "only-git", "only-tree"]);
        assert!(listed.iter().all(|e| e.kept_since.is_none()));
        assert_eq!(listed[0].worktree, None, "a symlink is not a worktree");
        assert_eq!(listed[2].worktree, Some(root.join("work/only-tree")));
        for entry in &listed {
            world.workspaces.remove_checkout(entry, &[]).await;
        }
        assert_eq!(world.workspaces.checkouts().unwrap(), []);
        assert!(outside.is_dir(), "the symlink's target stays");
    }
}
