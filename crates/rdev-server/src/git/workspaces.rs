//! Mirrors and checkouts under one root: `mirrors/<project>.git` (a bare `--mirror` clone,
//! fetched when the remote moved), and per task a worktree `work/<name>/` (the agent's,
//! read-write) whose git directory lives apart in `gitdirs/<name>/` (rdev's; the agent at
//! most reads it), so an agent can be given the worktree alone, or every worktree at once
//! without any git dir ([`GitWorkspaces::agent_roots`]). Checkouts made ahead of time live
//! in `spares/` ([`super::spares`]). The worktree's `.git` is a `gitdir:` file written by
//! rdev for the agent's own git; rdev's commands never read it. This module decides where
//! things live and runs git only through [`super::command`].

use std::{
    collections::HashMap,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use rdev_core::{ProjectName, TaskId};
use tokio::io::AsyncWriteExt;

use super::{
    command::{remote_url, Git, Repo, DEFAULT_GIT_TIMEOUT},
    GitEnv, GitError, Workspace,
};

/// Spare checkouts kept across all projects unless configured otherwise
/// (`git_spare_checkouts`).
pub const DEFAULT_SPARE_CHECKOUTS: usize = 32;

/// Mirrors, spare checkouts and workspaces under one root directory.
///
/// After each checkout a *spare* is prepared in the background: a `git clone --shared` of
/// the mirror at the branch head, named by the commit it holds. The next task on that
/// branch asks the remote for its head (`git ls-remote`, one round trip) and, when a spare
/// for exactly that commit exists, moves it into place; otherwise it fetches into the
/// mirror and clones as before. A push starts a background fetch and refill so the next
/// task finds a spare for the commit it just pushed. Every task still gets its own shared
/// clone; the spare only moves the clone off the task's critical path.
#[derive(Debug, Clone)]
pub struct GitWorkspaces {
    pub(super) root: PathBuf,
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    pub(super) spare_limit: usize,
    pub(super) background: tokio_util::task::TaskTracker,
    /// How long one git command may run.
    pub(super) timeout: Duration,
}

/// Where task worktrees live, under the root.
pub(super) const WORKTREES: &str = "work";

/// Where the task worktrees' git directories live, under the root: never inside
/// [`WORKTREES`], so one writable mount of all worktrees exposes no git dir.
pub(super) const GIT_DIRS: &str = "gitdirs";

fn absolute_root(root: PathBuf) -> PathBuf {
    std::path::absolute(&root).unwrap_or(root)
}

/// Where one checkout lives: its worktree and its git directory.
#[derive(Debug, Clone)]
pub(super) struct CheckoutDirs {
    pub(super) tree: PathBuf,
    pub(super) git_dir: PathBuf,
}

impl CheckoutDirs {
    /// Both halves inside `dir` (`tree/`, `git/`): a spare, claimed with one rename.
    pub(super) fn bundled(dir: &Path) -> Self {
        Self {
            tree: dir.join("tree"),
            git_dir: dir.join("git"),
        }
    }

    /// Clones `branch` of `mirror` here, borrowing the mirror's objects (`--shared`).
    pub(super) async fn clone_from(
        &self,
        mirror: &Path,
        branch: &str,
        timeout: Duration,
    ) -> Result<(), GitError> {
        let branch = format!("--branch={branch}");
        self.create(&["clone", "--shared", &branch], Some(mirror), timeout)
            .await
    }

    /// An empty repository here whose HEAD is the unborn `branch`.
    async fn init(&self, branch: &str, timeout: Duration) -> Result<(), GitError> {
        let branch = format!("--initial-branch={branch}");
        self.create(&["init", &branch], None, timeout).await
    }

    /// `git <command> --quiet --template= --separate-git-dir=<git dir> -- [<source>] <tree>`:
    /// no template, so no sample hooks either.
    async fn create(
        &self,
        command: &[&str],
        source: Option<&Path>,
        timeout: Duration,
    ) -> Result<(), GitError> {
        let separate = format!("--separate-git-dir={}", self.git_dir.to_string_lossy());
        let mut args = command.to_vec();
        args.extend(["--quiet", "--template=", &separate, "--"]);
        let source = source.map(|s| s.to_string_lossy());
        args.extend(source.as_deref());
        let tree = self.tree.to_string_lossy();
        args.push(&tree);
        Git::new(Repo::None, &GitEnv::default())
            .timeout(timeout)
            .run(&args)
            .await?;
        Ok(())
    }

    /// Points the worktree's `.git` file at the git directory's current absolute path (a
    /// spare was cloned elsewhere and moved here). The old file is removed first, so a
    /// symlink in its place would be replaced, never followed.
    async fn write_gitfile(&self) -> std::io::Result<()> {
        let gitfile = self.tree.join(".git");
        match tokio::fs::remove_file(&gitfile).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut contents = b"gitdir: ".to_vec();
        contents.extend_from_slice(self.git_dir.as_os_str().as_bytes());
        contents.push(b'\n');
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&gitfile)
            .await?;
        file.write_all(&contents).await?;
        file.flush().await
    }
}

impl GitWorkspaces {
    /// Keeps mirrors in `root/mirrors`, spares in `root/spares`, worktrees in `root/work`
    /// and their git dirs in `root/gitdirs`, with up to [`DEFAULT_SPARE_CHECKOUTS`] spares.
    /// A relative `root` is made absolute: checkouts' `.git` files and the paths given to
    /// the agent's sandbox must not depend on a working directory.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: absolute_root(root.into()),
            locks: Arc::default(),
            spare_limit: DEFAULT_SPARE_CHECKOUTS,
            background: tokio_util::task::TaskTracker::new(),
            timeout: DEFAULT_GIT_TIMEOUT,
        }
    }

    /// For a sandbox shared by every task under `root` (the supervised opencode server):
    /// `(writable, read_only)`, the directory every worktree lives in, and those of every
    /// git dir and mirror. No git dir is under a writable one. A sandbox per task should use
    /// [`Workspace::dir`] and [`Workspace::agent_read_only_paths`], which name one task's
    /// and one project's only.
    pub fn agent_roots(root: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
        let root = absolute_root(root.to_path_buf());
        (
            vec![root.join(WORKTREES)],
            vec![root.join(GIT_DIRS), root.join("mirrors")],
        )
    }

    /// The worktree and git dir of a new task checkout named `name`.
    pub(super) fn task_checkout(&self, name: &str) -> CheckoutDirs {
        CheckoutDirs {
            tree: self.root.join(WORKTREES).join(name),
            git_dir: self.root.join(GIT_DIRS).join(name),
        }
    }

    /// Keeps at most `limit` spare checkouts (the least recently made go first); 0 turns
    /// spares off, so every task fetches and clones on its own critical path.
    pub fn with_spare_limit(mut self, limit: usize) -> Self {
        self.spare_limit = limit;
        self
    }

    /// Kills any git command that runs longer than `timeout` (default
    /// [`DEFAULT_GIT_TIMEOUT`]); it then fails with [`GitError::Timeout`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Git on `repo` with `env`, limited to the configured timeout: how every git command
    /// of these workspaces is made.
    pub(super) fn git<'a>(&self, repo: Repo<'a>, env: &'a GitEnv) -> Git<'a> {
        Git::new(repo, env).timeout(self.timeout)
    }

    pub(super) fn mirror_dir(&self, project: &ProjectName) -> PathBuf {
        self.root.join("mirrors").join(format!("{project}.git"))
    }

    pub(super) fn lock(&self, project: &ProjectName) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(locks.entry(project.to_string()).or_default())
    }

    /// The commit the remote's `branch` points at, or `None` when it has no such branch.
    async fn remote_head(
        &self,
        repo_url: &str,
        branch: &str,
        env: &GitEnv,
    ) -> Result<Option<String>, GitError> {
        let want = format!("refs/heads/{branch}");
        let out = self
            .git(Repo::None, env)
            .run(&["ls-remote", "--quiet", "--", repo_url, &want])
            .await?;
        Ok(out
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .find(|(_, name)| *name == want)
            .map(|(sha, _)| sha.to_owned()))
    }

    /// The commit the mirror's `branch` points at, if it has the branch.
    pub(super) async fn mirror_head(&self, mirror: &Path, branch: &str) -> Option<String> {
        let name = format!("refs/heads/{branch}");
        self.git(Repo::Bare(mirror), &GitEnv::default())
            .run(&["rev-parse", "--verify", "--quiet", &name])
            .await
            .ok()
            .map(|out| out.trim().to_owned())
            .filter(|sha| !sha.is_empty())
    }

    /// Waits until the background mirror refreshes and spare refills started so far have
    /// finished (tests and benchmarks use it to observe a settled state).
    pub async fn settled(&self) {
        self.background.close();
        self.background.wait().await;
        self.background.reopen();
    }

    /// Brings the project's mirror up to date, creating it on first use. The caller holds
    /// the project's lock.
    pub(super) async fn sync_mirror(
        &self,
        project: &ProjectName,
        repo_url: &str,
        env: &GitEnv,
    ) -> Result<(), GitError> {
        let mirror = self.mirror_dir(project);
        if mirror.join("HEAD").exists() {
            self.git(Repo::Bare(&mirror), env)
                .run(&[
                    "fetch",
                    "--prune",
                    "--quiet",
                    "--no-recurse-submodules",
                    "--no-write-fetch-head",
                    "--",
                    repo_url,
                    "+refs/heads/*:refs/heads/*",
                ])
                .await?;
        } else {
            let parent = mirror.parent().expect("mirror dir has a parent");
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(GitError::io("create", parent))?;
            let tmp = parent.join(format!(".{project}.git.tmp"));
            let _ = tokio::fs::remove_dir_all(&tmp).await;
            self.git(Repo::None, env)
                .run(&[
                    "clone",
                    "--mirror",
                    "--quiet",
                    "--template=",
                    "--",
                    repo_url,
                    &tmp.to_string_lossy(),
                ])
                .await?;
            tokio::fs::rename(&tmp, &mirror)
                .await
                .map_err(GitError::io("rename into place", &mirror))?;
        }
        Ok(())
    }

    /// A fresh checkout of `branch` for `task`, sharing objects with the warm mirror.
    pub async fn prepare(
        &self,
        project: &ProjectName,
        repo_url: &str,
        branch: &str,
        task: TaskId,
        env: &GitEnv,
    ) -> Result<Workspace, GitError> {
        let repo_url = remote_url(repo_url);
        let guard = self.lock(project).lock_owned().await;
        let mirror = self.mirror_dir(project);
        // A fresh directory per attempt: an agent orphaned by a crashed worker can never
        // write into the checkout of the attempt that replaced it.
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let checkout = self.task_checkout(&format!("{project}-{task}-{}", &unique[..8]));
        for half in [&checkout.tree, &checkout.git_dir] {
            let parent = half.parent().expect("a checkout has a parent");
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(GitError::io("create", parent))?;
        }

        let mut checked_out = false;
        let has_branch = if self.spare_limit > 0 && mirror.join("HEAD").exists() {
            let head = self.remote_head(&repo_url, branch, env).await?;
            if let Some(sha) = &head {
                checked_out = self.take_spare(project, branch, sha, &checkout).await;
            }
            if !checked_out {
                self.sync_mirror(project, &repo_url, env).await?;
            }
            head.is_some()
        } else {
            self.sync_mirror(project, &repo_url, env).await?;
            self.mirror_head(&mirror, branch).await.is_some()
        };
        if !checked_out {
            if has_branch {
                checkout.clone_from(&mirror, branch, self.timeout).await?;
            } else {
                checkout.init(branch, self.timeout).await?;
            }
        }
        let gitfile = checkout.tree.join(".git");
        checkout
            .write_gitfile()
            .await
            .map_err(GitError::io("write", &gitfile))?;
        if has_branch {
            self.refill_in_background(guard, project, branch);
        }
        Ok(Workspace {
            dir: checkout.tree,
            is_empty: !has_branch,
            git_dir: checkout.git_dir,
            // What `clone --shared` wrote into the git dir's `objects/info/alternates`,
            // known here rather than read back from a file.
            borrowed_objects: if has_branch {
                vec![mirror.join("objects")]
            } else {
                Vec::new()
            },
            branch: branch.to_owned(),
            repo_url: repo_url.into_owned(),
            env: env.clone(),
            project: project.clone(),
            owner: self.clone(),
        })
    }

    /// After a push: fetch the new head into the mirror and make its spare, in the
    /// background, so the project's next task starts from a ready checkout.
    pub(super) fn rewarm_in_background(
        &self,
        project: &ProjectName,
        repo_url: &str,
        branch: &str,
        env: &GitEnv,
    ) {
        if self.spare_limit == 0 {
            return;
        }
        let this = self.clone();
        let (project, repo_url, branch, env) = (
            project.clone(),
            repo_url.to_owned(),
            branch.to_owned(),
            env.clone(),
        );
        self.background.spawn(async move {
            let _guard = this.lock(&project).lock_owned().await;
            let result = async {
                this.sync_mirror(&project, &repo_url, &env).await?;
                this.refill(&project, &branch).await
            }
            .await;
            if let Err(e) = result {
                tracing::warn!(project = %project, error = %e, "could not refresh the mirror after a push");
            }
        });
    }

    /// Deletes the project's mirror and spare checkouts (the project was deleted).
    pub async fn forget(&self, project: &ProjectName) {
        let _guard = self.lock(project).lock_owned().await;
        for dir in [self.mirror_dir(project), self.spares_dir(project)] {
            match tokio::fs::remove_dir_all(&dir).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not remove");
                }
                _ => {}
            }
        }
    }

    /// Deletes a task's checkout (worktree and git dir) in the background: after an agent's
    /// `npm install` that can take seconds, which must not stand between the agent's exit
    /// and the task's result. [`GitWorkspaces::settled`] waits for it. With the agent's
    /// state: [`GitWorkspaces::remove_with`].
    pub fn remove(&self, ws: Workspace) {
        self.remove_with(ws, Vec::new());
    }
}

#[cfg(test)]
mod tests {
    use rdev_core::ErrorCode;

    use super::*;
    use crate::git::fixtures::World;

    /// What the worktree's `.git` file says.
    fn gitfile(ws: &Workspace) -> String {
        std::fs::read_to_string(ws.dir.join(".git")).unwrap()
    }

    /// Plain `git` run inside the worktree, as the agent runs it: found through `.git`.
    fn agents_git(ws: &Workspace, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .current_dir(&ws.dir)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[tokio::test]
    async fn checkout_keeps_its_git_dir_out_of_the_worktrees() {
        let world = World::new(true).await;
        let (root, ws_root) = (&world.root, &world.workspaces);
        let env = GitEnv::default();
        let mirror_objects = root.join("mirrors").join("site.git").join("objects");
        let cloned = world.checkout("site", TaskId::new(), &env).await;
        ws_root.settled().await;
        // The second one is a spare, cloned elsewhere and moved into place.
        let from_spare = world.checkout("site", TaskId::new(), &env).await;
        let (writable, read_only) = GitWorkspaces::agent_roots(root);
        assert_eq!(writable, vec![root.join("work")]);
        assert_eq!(read_only, vec![root.join("gitdirs"), root.join("mirrors")]);
        for ws in [&cloned, &from_spare] {
            assert!(ws.dir.is_absolute());
            assert_eq!(ws.dir.parent(), Some(writable[0].as_path()));
            assert_eq!(ws.git_dir.parent(), Some(read_only[0].as_path()));
            assert!(ws.dir.join(".git").is_file());
            assert_eq!(gitfile(ws), format!("gitdir: {}\n", ws.git_dir.display()));
            assert_eq!(
                ws.agent_read_only_paths(),
                vec![ws.git_dir.clone(), mirror_objects.clone()]
            );
            // What rdev reports borrowing is what the clone recorded.
            let alternates =
                std::fs::read_to_string(ws.git_dir.join("objects/info/alternates")).unwrap();
            assert_eq!(alternates.trim(), mirror_objects.to_string_lossy());
            // The agent's own git works through the `.git` file.
            std::fs::write(ws.dir.join("README.md"), "changed\n").unwrap();
            assert_eq!(agents_git(ws, &["status", "--porcelain"]), " M README.md\n");
            assert!(agents_git(ws, &["diff"]).contains("+changed"));
            assert!(ws.has_changes().await.unwrap());
        }
        ws_root.remove(cloned);
        ws_root.remove(from_spare);
        ws_root.settled().await;
        for dir in ["work", "gitdirs"] {
            assert_eq!(std::fs::read_dir(root.join(dir)).unwrap().count(), 0);
        }
        let spares = std::fs::read_dir(root.join("spares/site")).unwrap();
        let names: Vec<_> = spares.map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "one spare, nothing left over: {names:?}");
    }

    #[tokio::test]
    async fn failure_names_the_command_and_stderr() {
        let tmp = tempfile::tempdir().unwrap();
        let ws_root = GitWorkspaces::new(tmp.path().join("git"));
        let project = ProjectName::parse("gone").unwrap();
        let missing = tmp
            .path()
            .join("missing.git")
            .to_string_lossy()
            .into_owned();
        let err = ws_root
            .prepare(
                &project,
                &missing,
                "main",
                TaskId::new(),
                &GitEnv::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), "git_failed");
        assert!(err.to_string().contains("clone --mirror"), "{err}");
    }

    #[tokio::test]
    async fn a_git_command_past_the_configured_timeout_ends_with_git_timeout() {
        // A remote that takes the connection and never answers: git would wait forever.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/site.git", silent.local_addr().unwrap());
        let tmp = tempfile::tempdir().unwrap();
        let limit = Duration::from_millis(300);
        let ws_root = GitWorkspaces::new(tmp.path().join("git")).with_timeout(limit);
        let project = ProjectName::parse("site").unwrap();
        let err = ws_root
            .prepare(&project, &url, "main", TaskId::new(), &GitEnv::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, GitError::Timeout(waited, args)
                if *waited == limit && args.contains("clone --mirror")),
            "{err:?}"
        );
        assert_eq!(err.code(), "git_timeout");
    }
}
