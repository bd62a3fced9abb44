//! Spare checkouts: after a task's checkout, and after each push, a background job clones
//! the mirror's branch head into `spares/<project>/<branch key>.<sha>/` (worktree `tree/`
//! and git dir `git/` in one directory), so the next task on that commit only moves it into
//! place: one rename claims the whole spare, then its halves move to `work/` and `gitdirs/`
//! ([`super::workspaces`]). Spares are keyed by commit, never handed out stale, capped
//! across projects, and deleted by renaming first so a taker gets one whole or not at all.
//! No agent has seen a spare: this module never runs git in a checkout an agent wrote.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use rdev_core::ProjectName;

use super::{workspaces::CheckoutDirs, GitError, GitWorkspaces};

/// How old an unfinished spare clone must be before a refill treats it as abandoned.
const ABANDONED_AFTER: Duration = Duration::from_secs(600);

/// Deletes a spare. It is renamed away first, so a task taking it at the same moment gets
/// it whole or not at all, never half-deleted.
async fn discard(spare: &Path) {
    let trash = spare.with_file_name(format!(".trash-{}", uuid::Uuid::new_v4().simple()));
    if tokio::fs::rename(spare, &trash).await.is_ok() {
        let _ = tokio::fs::remove_dir_all(&trash).await;
    }
}

/// A short file-name-safe key for a branch name.
pub(super) fn branch_key(branch: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(branch.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl GitWorkspaces {
    pub(super) fn spares_dir(&self, project: &ProjectName) -> PathBuf {
        self.root.join("spares").join(project.as_str())
    }

    /// `<hash of branch>.<sha>`: branch names may hold `/` and be long, commit ids are hex.
    pub(super) fn spare_path(&self, project: &ProjectName, branch: &str, sha: &str) -> PathBuf {
        self.spares_dir(project)
            .join(format!("{}.{sha}", branch_key(branch)))
    }

    /// Moves the spare for `sha` of `branch` into `to`; `false` when there is none (never
    /// made, taken or being discarded). The first rename claims the spare whole, so two
    /// takers never share one. Its `.git` file still names where it was cloned.
    pub(super) async fn take_spare(
        &self,
        project: &ProjectName,
        branch: &str,
        sha: &str,
        to: &CheckoutDirs,
    ) -> bool {
        let spare = self.spare_path(project, branch, sha);
        let claimed = spare.with_file_name(format!(".taken-{}", uuid::Uuid::new_v4().simple()));
        if tokio::fs::rename(&spare, &claimed).await.is_err() {
            return false;
        }
        let from = CheckoutDirs::bundled(&claimed);
        let moved = tokio::fs::rename(&from.git_dir, &to.git_dir).await.is_ok()
            && tokio::fs::rename(&from.tree, &to.tree).await.is_ok();
        if !moved {
            let _ = tokio::fs::remove_dir_all(&to.git_dir).await;
            let _ = tokio::fs::remove_dir_all(&claimed).await;
            return false;
        }
        let _ = tokio::fs::remove_dir(&claimed).await;
        true
    }

    /// Makes a spare for the mirror's head of `branch` in a background task that holds
    /// the project's lock (`guard`) until it is done.
    pub(super) fn refill_in_background(
        &self,
        guard: tokio::sync::OwnedMutexGuard<()>,
        project: &ProjectName,
        branch: &str,
    ) {
        if self.spare_limit == 0 {
            return;
        }
        let (this, project, branch) = (self.clone(), project.clone(), branch.to_owned());
        self.background.spawn(async move {
            let _guard = guard;
            if let Err(e) = this.refill(&project, &branch).await {
                tracing::warn!(project = %project, error = %e, "could not prepare a spare checkout");
            }
        });
    }

    /// Makes the spare for the mirror's head of `branch` unless it exists; drops spares of
    /// older heads and unfinished ones. The caller holds the project's lock.
    pub(super) async fn refill(&self, project: &ProjectName, branch: &str) -> Result<(), GitError> {
        let mirror = self.mirror_dir(project);
        let Some(sha) = self.mirror_head(&mirror, branch).await else {
            return Ok(());
        };
        let target = self.spare_path(project, branch, &sha);
        if tokio::fs::try_exists(&target).await.unwrap_or(false) {
            return Ok(());
        }
        let spares = self.spares_dir(project);
        tokio::fs::create_dir_all(&spares)
            .await
            .map_err(GitError::io("create", &spares))?;
        let stale = format!("{}.", branch_key(branch));
        let mut entries = tokio::fs::read_dir(&spares)
            .await
            .map_err(GitError::io("list", &spares))?;
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(GitError::io("list", &spares))?
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let unfinished = [".tmp-", ".taken-"].iter().any(|p| name.starts_with(p));
            let abandoned = match unfinished {
                // An unfinished clone or move: a crashed process's if it is old, else a
                // live one of another process sharing this directory.
                true => entry
                    .metadata()
                    .await
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().unwrap_or_default() > ABANDONED_AFTER),
                false => name.starts_with(".trash-"),
            };
            if abandoned {
                let _ = tokio::fs::remove_dir_all(entry.path()).await;
            } else if name.starts_with(&stale) {
                discard(&entry.path()).await;
            }
        }
        let tmp = spares.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
        CheckoutDirs::bundled(&tmp)
            .clone_from(&mirror, branch, self.timeout)
            .await?;
        tokio::fs::rename(&tmp, &target)
            .await
            .map_err(GitError::io("rename into place", &target))?;
        self.trim_spares().await;
        Ok(())
    }

    /// Removes the oldest spares beyond the limit.
    async fn trim_spares(&self) {
        let mut all = Vec::new();
        let Ok(mut projects) = tokio::fs::read_dir(self.root.join("spares")).await else {
            return;
        };
        while let Ok(Some(project)) = projects.next_entry().await {
            let Ok(mut spares) = tokio::fs::read_dir(project.path()).await else {
                continue;
            };
            while let Ok(Some(spare)) = spares.next_entry().await {
                if spare.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                let made = spare
                    .metadata()
                    .await
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::SystemTime::UNIX_EPOCH);
                all.push((made, spare.path()));
            }
        }
        if all.len() > self.spare_limit {
            all.sort();
            for (_, path) in &all[..all.len() - self.spare_limit] {
                discard(path).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rdev_core::TaskId;

    use super::*;
    use crate::git::{
        fixtures::{git_on, World},
        Author, GitEnv,
    };

    /// Names of the finished spares of `project`.
    fn spares(root: &Path, project: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(root.join("spares").join(project))
            .map(|entries| {
                entries
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    #[tokio::test]
    async fn spare_checkout_is_used_only_when_it_holds_the_remote_head() {
        let world = World::new(true).await;
        let (remote, root, ws_root) = (&world.remote, &world.root, &world.workspaces);
        let env = GitEnv::default();
        let first = world.checkout("site", TaskId::new(), &env).await;
        ws_root.settled().await;
        let head = world.remote_head().await;
        assert_eq!(
            spares(root, "site"),
            vec![format!("{}.{head}", branch_key("main"))]
        );

        // The next task takes the spare: the right commit, a clean tree, its own directory.
        let second = world.checkout("site", TaskId::new(), &env).await;
        assert_eq!(second.head().await.unwrap(), head);
        assert!(!second.has_changes().await.unwrap());
        assert!(second.dir.join("README.md").exists());
        assert_ne!(first.dir, second.dir);

        // Someone else pushes: the spare for the old head must not be handed out.
        ws_root.settled().await;
        std::fs::write(first.dir.join("other.txt"), "from elsewhere").unwrap();
        let author = Author::default();
        let outside = first
            .commit_all("Outside change", None, &author)
            .await
            .unwrap()
            .unwrap();
        git_on(
            &first.git_dir,
            &["push", "--quiet", remote, "HEAD:refs/heads/main"],
        )
        .await;
        let third = world.checkout("site", TaskId::new(), &env).await;
        assert_eq!(third.head().await.unwrap(), outside);
        assert!(third.dir.join("other.txt").exists());
        ws_root.settled().await;
        assert_eq!(
            spares(root, "site"),
            vec![format!("{}.{outside}", branch_key("main"))],
            "the stale spare is dropped and one for the new head made"
        );

        // rdev's own push refreshes the mirror and makes the spare for the pushed commit.
        std::fs::write(third.dir.join("page.html"), "<p>new</p>").unwrap();
        let task = TaskId::new();
        let pushed = third
            .commit_all("Page", Some(task), &author)
            .await
            .unwrap()
            .unwrap();
        third.push().await.unwrap();
        ws_root.settled().await;
        assert_eq!(
            spares(root, "site"),
            vec![format!("{}.{pushed}", branch_key("main"))]
        );
        let fourth = world.checkout("site", task, &env).await;
        assert_eq!(fourth.head().await.unwrap(), pushed);
        assert_eq!(
            fourth.find_task_commit_on_remote(task).await.unwrap(),
            Some(pushed)
        );
        for ws in [first, second, third, fourth] {
            ws_root.remove(ws);
        }
        ws_root.settled().await;
        ws_root.forget(&ProjectName::parse("site").unwrap()).await;
        assert!(!root.join("mirrors").join("site.git").exists());
        assert!(!root.join("spares").join("site").exists());
    }

    #[tokio::test]
    async fn spares_are_capped_and_can_be_turned_off() {
        let env = GitEnv::default();
        let mut capped = World::new(true).await;
        capped.workspaces = capped.workspaces.with_spare_limit(1);
        for name in ["one", "two"] {
            let ws = capped.checkout(name, TaskId::new(), &env).await;
            capped.workspaces.settled().await;
            capped.workspaces.remove(ws);
        }
        assert!(
            spares(&capped.root, "one").is_empty(),
            "the older spare is removed"
        );
        assert_eq!(spares(&capped.root, "two").len(), 1);

        let mut off = World::new(true).await;
        off.workspaces = off.workspaces.with_spare_limit(0);
        for _ in 0..2 {
            let ws = off.checkout("three", TaskId::new(), &env).await;
            off.workspaces.settled().await;
            assert!(ws.dir.join("README.md").exists());
            off.workspaces.remove(ws);
        }
        assert!(!off.root.join("spares").exists());
    }

    #[tokio::test]
    async fn refill_removes_abandoned_clones_but_not_live_ones() {
        let world = World::new(true).await;
        let spares_dir = world.root.join("spares").join("site");
        std::fs::create_dir_all(&spares_dir).unwrap();
        for name in [
            ".tmp-crashed",
            ".tmp-live",
            ".trash-half-deleted",
            ".taken-crashed",
        ] {
            std::fs::create_dir(spares_dir.join(name)).unwrap();
            std::fs::write(spares_dir.join(name).join("f"), "x").unwrap();
        }
        let status = std::process::Command::new("touch")
            .args(["-d", "1 hour ago"])
            .arg(spares_dir.join(".tmp-crashed"))
            .arg(spares_dir.join(".taken-crashed"))
            .status()
            .unwrap();
        assert!(status.success());
        let ws = world
            .checkout("site", TaskId::new(), &GitEnv::default())
            .await;
        world.workspaces.settled().await;
        let mut left: Vec<String> = std::fs::read_dir(&spares_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left.len(), 2, "{left:?}");
        assert_eq!(left[0], ".tmp-live");
        assert!(left[1].starts_with(&branch_key("main")), "{left:?}");
        world.workspaces.remove(ws);
    }
}
