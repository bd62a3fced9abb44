//! Git workspaces for builds: one warm bare mirror per project (`git clone --mirror` once,
//! `git fetch` when the remote moved) and a cheap per-task checkout that shares the
//! mirror's objects (`git clone --shared`), made ahead of time as a spare keyed by commit
//! (see [`GitWorkspaces`]). Also committing with the `Rdev-Task` trailer, finding a task's
//! commit on the remote, and pushing. Credentials reach git only through the environment
//! (`GIT_CONFIG_COUNT` / `http.extraHeader`), never argv or `.git/config`. This module runs
//! the `git` binary; it knows nothing about tasks beyond their id.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use rdev_core::{ErrorCode, ProjectName, TaskId};
use tokio::process::Command;

/// The commit trailer that ties a commit to the task that made it.
pub const TASK_TRAILER: &str = "Rdev-Task";

/// Longest stderr kept in an error message.
const STDERR_SNIPPET: usize = 2_000;

/// A git command failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("could not run git: {0}")]
    Spawn(String),
    #[error("`git {args}` failed ({status}): {stderr}")]
    Failed {
        args: String,
        status: String,
        stderr: String,
    },
    #[error("git output was not understood: {0}")]
    Parse(String),
    #[error("git timed out after {0:?}: {1}")]
    Timeout(Duration, String),
}

impl ErrorCode for GitError {
    fn code(&self) -> &'static str {
        match self {
            Self::Spawn(_) => "git_unavailable",
            Self::Failed { .. } => "git_failed",
            Self::Parse(_) => "git_parse_error",
            Self::Timeout(..) => "git_timeout",
        }
    }
}

/// Author identity for rdev's commits.
#[derive(Debug, Clone)]
pub struct Author {
    pub name: String,
    pub email: String,
}

impl Default for Author {
    fn default() -> Self {
        Self {
            name: "rdev".to_owned(),
            email: "rdev@localhost".to_owned(),
        }
    }
}

/// Environment handed to every git invocation (e.g. the credential header from the secret
/// store). Values are never logged.
#[derive(Clone, Default)]
pub struct GitEnv(pub Vec<(String, String)>);

impl std::fmt::Debug for GitEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = self.0.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("GitEnv").field("keys", &keys).finish()
    }
}

/// Runs git with a clean, non-interactive environment.
async fn git(dir: Option<&Path>, args: &[&str], env: &GitEnv) -> Result<String, GitError> {
    git_with_input(dir, args, env, None).await
}

/// [`git`] with `input` on its standard input (e.g. a commit message: argv is limited to
/// 128 KiB per argument and visible to every user in `ps`).
async fn git_with_input(
    dir: Option<&Path>,
    args: &[&str],
    env: &GitEnv,
    input: Option<&[u8]>,
) -> Result<String, GitError> {
    use tokio::io::AsyncWriteExt;
    let mut cmd = Command::new("git");
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    cmd.args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "/bin/false")
        .env("LC_ALL", "C")
        .envs(env.0.iter().map(|(k, v)| (k, v)))
        .stdin(if input.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let run = async {
        let mut child = cmd.spawn().map_err(|e| GitError::Spawn(e.to_string()))?;
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin
                .write_all(input)
                .await
                .map_err(|e| GitError::Spawn(e.to_string()))?;
        }
        child
            .wait_with_output()
            .await
            .map_err(|e| GitError::Spawn(e.to_string()))
    };
    let out = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .map_err(|_| GitError::Timeout(Duration::from_secs(600), args.join(" ")))??;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let snippet: String = stderr.trim().chars().take(STDERR_SNIPPET).collect();
        return Err(GitError::Failed {
            args: args.join(" "),
            status: out.status.to_string(),
            stderr: snippet,
        });
    }
    String::from_utf8(out.stdout).map_err(|e| GitError::Parse(e.to_string()))
}

/// The commit the remote's `branch` points at, or `None` when it has no such branch.
async fn remote_head(
    repo_url: &str,
    branch: &str,
    env: &GitEnv,
) -> Result<Option<String>, GitError> {
    let want = format!("refs/heads/{branch}");
    let out = git(None, &["ls-remote", "--quiet", repo_url, &want], env).await?;
    Ok(out
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .find(|(_, name)| *name == want)
        .map(|(sha, _)| sha.to_owned()))
}

/// The commit the mirror's `branch` points at, if it has the branch.
async fn mirror_head(mirror: &Path, branch: &str) -> Option<String> {
    let name = format!("refs/heads/{branch}");
    git(
        Some(mirror),
        &["rev-parse", "--verify", "--quiet", &name],
        &GitEnv::default(),
    )
    .await
    .ok()
    .map(|out| out.trim().to_owned())
    .filter(|sha| !sha.is_empty())
}

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
fn branch_key(branch: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(branch.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// A per-task checkout.
#[derive(Debug)]
pub struct Workspace {
    /// The checkout's directory (the agent's working directory).
    pub dir: PathBuf,
    /// Whether the branch had no commit yet (a new project).
    pub is_empty: bool,
    branch: String,
    repo_url: String,
    env: GitEnv,
    project: ProjectName,
    owner: GitWorkspaces,
}

/// Spare checkouts kept across all projects unless configured otherwise
/// (`git_spare_checkouts`).
pub const DEFAULT_SPARE_CHECKOUTS: usize = 32;

/// Mirrors, spare checkouts and workspaces under one root directory.
///
/// After each checkout a *spare* is prepared in the background: a `git clone --shared` of
/// the mirror at the branch head, named by the commit it holds. The next task on that
/// branch asks the remote for its head (`git ls-remote`, one round trip) and, when a spare
/// for exactly that commit exists, renames it into place; otherwise it fetches into the
/// mirror and clones as before. A push starts a background fetch and refill so the next
/// task finds a spare for the commit it just pushed. Every task still gets its own shared
/// clone; the spare only moves the clone off the task's critical path.
#[derive(Debug, Clone)]
pub struct GitWorkspaces {
    root: PathBuf,
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    spare_limit: usize,
    background: tokio_util::task::TaskTracker,
}

impl GitWorkspaces {
    /// Keeps mirrors in `root/mirrors`, spares in `root/spares` and checkouts in
    /// `root/work`, with up to [`DEFAULT_SPARE_CHECKOUTS`] spares.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            locks: Arc::default(),
            spare_limit: DEFAULT_SPARE_CHECKOUTS,
            background: tokio_util::task::TaskTracker::new(),
        }
    }

    /// Keeps at most `limit` spare checkouts (the least recently made go first); 0 turns
    /// spares off, so every task fetches and clones on its own critical path.
    pub fn with_spare_limit(mut self, limit: usize) -> Self {
        self.spare_limit = limit;
        self
    }

    fn mirror_dir(&self, project: &ProjectName) -> PathBuf {
        self.root.join("mirrors").join(format!("{project}.git"))
    }

    fn spares_dir(&self, project: &ProjectName) -> PathBuf {
        self.root.join("spares").join(project.as_str())
    }

    /// `<hash of branch>.<sha>`: branch names may hold `/` and be long, commit ids are hex.
    fn spare_path(&self, project: &ProjectName, branch: &str, sha: &str) -> PathBuf {
        self.spares_dir(project)
            .join(format!("{}.{sha}", branch_key(branch)))
    }

    fn lock(&self, project: &ProjectName) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(locks.entry(project.to_string()).or_default())
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
    async fn sync_mirror(
        &self,
        project: &ProjectName,
        repo_url: &str,
        env: &GitEnv,
    ) -> Result<(), GitError> {
        let mirror = self.mirror_dir(project);
        if mirror.join("HEAD").exists() {
            git(
                Some(&mirror),
                &[
                    "fetch",
                    "--prune",
                    "--quiet",
                    repo_url,
                    "+refs/heads/*:refs/heads/*",
                ],
                env,
            )
            .await?;
        } else {
            let parent = mirror.parent().expect("mirror dir has a parent");
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| GitError::Spawn(e.to_string()))?;
            let tmp = parent.join(format!(".{project}.git.tmp"));
            let _ = tokio::fs::remove_dir_all(&tmp).await;
            let tmp_s = tmp.to_string_lossy().into_owned();
            git(
                None,
                &["clone", "--mirror", "--quiet", repo_url, &tmp_s],
                env,
            )
            .await?;
            tokio::fs::rename(&tmp, &mirror)
                .await
                .map_err(|e| GitError::Spawn(e.to_string()))?;
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
        let guard = self.lock(project).lock_owned().await;
        let mirror = self.mirror_dir(project);
        // A fresh directory per attempt: an agent orphaned by a crashed worker can never
        // write into the checkout of the attempt that replaced it.
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let dir = self
            .root
            .join("work")
            .join(format!("{project}-{task}-{}", &unique[..8]));
        tokio::fs::create_dir_all(dir.parent().expect("has parent"))
            .await
            .map_err(|e| GitError::Spawn(e.to_string()))?;

        let mut checked_out = false;
        let has_branch = if self.spare_limit > 0 && mirror.join("HEAD").exists() {
            let head = remote_head(repo_url, branch, env).await?;
            if let Some(sha) = &head {
                checked_out = tokio::fs::rename(self.spare_path(project, branch, sha), &dir)
                    .await
                    .is_ok();
            }
            if !checked_out {
                self.sync_mirror(project, repo_url, env).await?;
            }
            head.is_some()
        } else {
            self.sync_mirror(project, repo_url, env).await?;
            mirror_head(&mirror, branch).await.is_some()
        };
        if !checked_out {
            let mirror_s = mirror.to_string_lossy().into_owned();
            let dir_s = dir.to_string_lossy().into_owned();
            if has_branch {
                git(
                    None,
                    &[
                        "clone", "--shared", "--quiet", "--branch", branch, &mirror_s, &dir_s,
                    ],
                    env,
                )
                .await?;
            } else {
                git(None, &["init", "--quiet", &dir_s], env).await?;
                git(
                    Some(&dir),
                    &["symbolic-ref", "HEAD", &format!("refs/heads/{branch}")],
                    env,
                )
                .await?;
            }
        }
        if has_branch {
            self.refill_in_background(guard, project, branch);
        }
        Ok(Workspace {
            dir,
            is_empty: !has_branch,
            branch: branch.to_owned(),
            repo_url: repo_url.to_owned(),
            env: env.clone(),
            project: project.clone(),
            owner: self.clone(),
        })
    }

    /// Makes a spare for the mirror's head of `branch` in a background task that holds
    /// the project's lock (`guard`) until it is done.
    fn refill_in_background(
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

    /// After a push: fetch the new head into the mirror and make its spare, in the
    /// background, so the project's next task starts from a ready checkout.
    fn rewarm_in_background(
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

    /// Makes the spare for the mirror's head of `branch` unless it exists; drops spares of
    /// older heads and unfinished ones. The caller holds the project's lock.
    async fn refill(&self, project: &ProjectName, branch: &str) -> Result<(), GitError> {
        let io = |e: std::io::Error| GitError::Spawn(e.to_string());
        let mirror = self.mirror_dir(project);
        let Some(sha) = mirror_head(&mirror, branch).await else {
            return Ok(());
        };
        let target = self.spare_path(project, branch, &sha);
        if tokio::fs::try_exists(&target).await.unwrap_or(false) {
            return Ok(());
        }
        let spares = self.spares_dir(project);
        tokio::fs::create_dir_all(&spares).await.map_err(io)?;
        let stale = format!("{}.", branch_key(branch));
        let mut entries = tokio::fs::read_dir(&spares).await.map_err(io)?;
        while let Some(entry) = entries.next_entry().await.map_err(io)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let abandoned = match name.strip_prefix(".tmp-") {
                // An unfinished clone: a crashed refill's if it is old, else a live one of
                // another process sharing this directory.
                Some(_) => entry
                    .metadata()
                    .await
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().unwrap_or_default() > ABANDONED_AFTER),
                None => name.starts_with(".trash-"),
            };
            if abandoned {
                let _ = tokio::fs::remove_dir_all(entry.path()).await;
            } else if name.starts_with(&stale) {
                discard(&entry.path()).await;
            }
        }
        let tmp = spares.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
        let (mirror_s, tmp_s) = (
            mirror.to_string_lossy().into_owned(),
            tmp.to_string_lossy().into_owned(),
        );
        git(
            None,
            &[
                "clone", "--shared", "--quiet", "--branch", branch, &mirror_s, &tmp_s,
            ],
            &GitEnv::default(),
        )
        .await?;
        tokio::fs::rename(&tmp, &target).await.map_err(io)?;
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

    /// Creates a bare repository `root/<project>.git` on `branch` if it does not exist;
    /// returns its path (used as the project's `repo_url`).
    pub async fn create_bare_repo(
        root: &Path,
        project: &ProjectName,
        branch: &str,
    ) -> Result<PathBuf, GitError> {
        let path = root.join(format!("{project}.git"));
        if !path.join("HEAD").exists() {
            tokio::fs::create_dir_all(root)
                .await
                .map_err(|e| GitError::Spawn(e.to_string()))?;
            let p = path.to_string_lossy().into_owned();
            git(
                None,
                &["init", "--bare", "--quiet", "-b", branch, &p],
                &GitEnv::default(),
            )
            .await?;
        }
        Ok(path)
    }

    /// Deletes a task's checkout in the background: after an agent's `npm install` that
    /// can take seconds, which must not stand between the agent's exit and the task's
    /// result. [`GitWorkspaces::settled`] waits for it.
    pub fn remove(&self, ws: Workspace) {
        self.background.spawn(async move {
            if let Err(e) = tokio::fs::remove_dir_all(&ws.dir).await {
                tracing::warn!(dir = %ws.dir.display(), error = %e, "could not remove workspace");
            }
        });
    }
}

impl Workspace {
    /// Whether the working tree differs from HEAD (new, changed or deleted files).
    pub async fn has_changes(&self) -> Result<bool, GitError> {
        let out = git(
            Some(&self.dir),
            &["status", "--porcelain", "--untracked-files=all"],
            &self.env,
        )
        .await?;
        Ok(!out.trim().is_empty())
    }

    /// Commits everything with `message` plus, when `task` is given, the
    /// `Rdev-Task: <task>` trailer. Returns the new commit's SHA, or `None` when nothing
    /// changed.
    pub async fn commit_all(
        &self,
        message: &str,
        task: Option<TaskId>,
        author: &Author,
    ) -> Result<Option<String>, GitError> {
        if !self.has_changes().await? {
            return Ok(None);
        }
        git(Some(&self.dir), &["add", "--all"], &self.env).await?;
        let full = match task {
            Some(task) => format!("{}\n\n{TASK_TRAILER}: {task}\n", message.trim_end()),
            None => format!("{}\n", message.trim_end()),
        };
        let mut env = self.env.clone();
        for (k, v) in [
            ("GIT_AUTHOR_NAME", &author.name),
            ("GIT_AUTHOR_EMAIL", &author.email),
            ("GIT_COMMITTER_NAME", &author.name),
            ("GIT_COMMITTER_EMAIL", &author.email),
        ] {
            env.0.push((k.to_owned(), v.clone()));
        }
        git_with_input(
            Some(&self.dir),
            &["commit", "--quiet", "--no-verify", "--file=-"],
            &env,
            Some(full.as_bytes()),
        )
        .await?;
        self.head().await.map(Some)
    }

    /// The SHA of HEAD.
    pub async fn head(&self) -> Result<String, GitError> {
        Ok(git(Some(&self.dir), &["rev-parse", "HEAD"], &self.env)
            .await?
            .trim()
            .to_owned())
    }

    /// The commit on the remote branch that carries `task`'s trailer, if any. Used so a
    /// retried attempt never pushes the same work twice.
    pub async fn find_task_commit_on_remote(
        &self,
        task: TaskId,
    ) -> Result<Option<String>, GitError> {
        let remote_ref = format!("refs/rdev/remote/{}", self.branch);
        let refspec = format!("+refs/heads/{}:{remote_ref}", self.branch);
        if let Err(e) = git(
            Some(&self.dir),
            &["fetch", "--quiet", &self.repo_url, &refspec],
            &self.env,
        )
        .await
        {
            // An empty remote has no branch yet: nothing can carry the trailer.
            if matches!(&e, GitError::Failed { stderr, .. } if stderr.contains("couldn't find remote ref"))
            {
                return Ok(None);
            }
            return Err(e);
        }
        let grep = format!("--grep=^{TASK_TRAILER}: {task}$");
        let out = git(
            Some(&self.dir),
            &["log", &remote_ref, "--format=%H", "-n", "1", &grep],
            &self.env,
        )
        .await?;
        Ok(out
            .lines()
            .next()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty()))
    }

    /// Pushes HEAD to the remote branch (fast-forward only).
    pub async fn push(&self) -> Result<(), GitError> {
        let refspec = format!("HEAD:refs/heads/{}", self.branch);
        git(
            Some(&self.dir),
            &["push", "--quiet", &self.repo_url, &refspec],
            &self.env,
        )
        .await?;
        self.owner
            .rewarm_in_background(&self.project, &self.repo_url, &self.branch, &self.env);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn bare_repo(dir: &Path, with_commit: bool) -> String {
        let bare = dir.join("remote.git");
        let bare_s = bare.to_string_lossy().into_owned();
        git(
            None,
            &["init", "--bare", "--quiet", "-b", "main", &bare_s],
            &GitEnv::default(),
        )
        .await
        .unwrap();
        if with_commit {
            let seed = dir.join("seed");
            let seed_s = seed.to_string_lossy().into_owned();
            git(
                None,
                &["init", "--quiet", "-b", "main", &seed_s],
                &GitEnv::default(),
            )
            .await
            .unwrap();
            std::fs::write(seed.join("README.md"), "hello\n").unwrap();
            let env = GitEnv(vec![
                ("GIT_AUTHOR_NAME".into(), "t".into()),
                ("GIT_AUTHOR_EMAIL".into(), "t@t".into()),
                ("GIT_COMMITTER_NAME".into(), "t".into()),
                ("GIT_COMMITTER_EMAIL".into(), "t@t".into()),
            ]);
            git(Some(&seed), &["add", "."], &env).await.unwrap();
            git(Some(&seed), &["commit", "-qm", "seed"], &env)
                .await
                .unwrap();
            git(Some(&seed), &["push", "-q", &bare_s, "main"], &env)
                .await
                .unwrap();
        }
        bare_s
    }

    #[tokio::test]
    async fn change_is_committed_with_trailer_pushed_and_found_again() {
        let tmp = tempfile::tempdir().unwrap();
        let remote = bare_repo(tmp.path(), true).await;
        let ws_root = GitWorkspaces::new(tmp.path().join("git"));
        let project = ProjectName::parse("site").unwrap();
        let task = TaskId::new();
        let env = GitEnv::default();
        let ws = ws_root
            .prepare(&project, &remote, "main", task, &env)
            .await
            .unwrap();
        assert!(!ws.is_empty);
        assert!(ws.dir.join("README.md").exists());
        assert_eq!(
            ws.commit_all("nothing", Some(task), &Author::default())
                .await
                .unwrap(),
            None
        );
        assert_eq!(ws.find_task_commit_on_remote(task).await.unwrap(), None);

        std::fs::write(ws.dir.join("index.html"), "<h1>hi</h1>").unwrap();
        let sha = ws
            .commit_all("Add page", Some(task), &Author::default())
            .await
            .unwrap()
            .unwrap();
        ws.push().await.unwrap();
        let remote_head = git(
            None,
            &["--git-dir", &remote, "rev-parse", "refs/heads/main"],
            &env,
        )
        .await
        .unwrap();
        assert_eq!(remote_head.trim(), sha);
        let msg = git(
            None,
            &["--git-dir", &remote, "log", "-1", "--format=%B"],
            &env,
        )
        .await
        .unwrap();
        assert!(msg.contains(&format!("Rdev-Task: {task}")), "{msg}");

        // A retry in a fresh workspace finds the pushed commit by its trailer.
        let ws2 = ws_root
            .prepare(&project, &remote, "main", task, &env)
            .await
            .unwrap();
        assert_eq!(
            ws2.find_task_commit_on_remote(task).await.unwrap(),
            Some(sha)
        );
        assert_eq!(
            ws2.find_task_commit_on_remote(TaskId::new()).await.unwrap(),
            None
        );
        ws_root.remove(ws2);
    }

    #[tokio::test]
    async fn empty_remote_gives_an_empty_workspace_on_the_branch() {
        let tmp = tempfile::tempdir().unwrap();
        let remote = bare_repo(tmp.path(), false).await;
        let ws_root = GitWorkspaces::new(tmp.path().join("git"));
        let project = ProjectName::parse("new-site").unwrap();
        let task = TaskId::new();
        let ws = ws_root
            .prepare(&project, &remote, "main", task, &GitEnv::default())
            .await
            .unwrap();
        assert!(ws.is_empty);
        assert_eq!(ws.find_task_commit_on_remote(task).await.unwrap(), None);
        std::fs::write(ws.dir.join("a.txt"), "a").unwrap();
        let sha = ws
            .commit_all("Initial", Some(task), &Author::default())
            .await
            .unwrap()
            .unwrap();
        ws.push().await.unwrap();
        assert_eq!(
            ws.find_task_commit_on_remote(task).await.unwrap(),
            Some(sha)
        );
    }

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

    async fn rev(dir: &Path, what: &str) -> String {
        git(Some(dir), &["rev-parse", what], &GitEnv::default())
            .await
            .unwrap()
            .trim()
            .to_owned()
    }

    #[tokio::test]
    async fn spare_checkout_is_used_only_when_it_holds_the_remote_head() {
        let tmp = tempfile::tempdir().unwrap();
        let remote = bare_repo(tmp.path(), true).await;
        let root = tmp.path().join("git");
        let ws_root = GitWorkspaces::new(&root);
        let project = ProjectName::parse("site").unwrap();
        let env = GitEnv::default();
        let first = ws_root
            .prepare(&project, &remote, "main", TaskId::new(), &env)
            .await
            .unwrap();
        ws_root.settled().await;
        let head = rev(Path::new(&remote), "refs/heads/main").await;
        assert_eq!(
            spares(&root, "site"),
            vec![format!("{}.{head}", branch_key("main"))]
        );

        // The next task takes the spare: the right commit, a clean tree, its own directory.
        let second = ws_root
            .prepare(&project, &remote, "main", TaskId::new(), &env)
            .await
            .unwrap();
        assert_eq!(rev(&second.dir, "HEAD").await, head);
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
        git(
            Some(&first.dir),
            &["push", "--quiet", &remote, "HEAD:refs/heads/main"],
            &env,
        )
        .await
        .unwrap();
        let third = ws_root
            .prepare(&project, &remote, "main", TaskId::new(), &env)
            .await
            .unwrap();
        assert_eq!(rev(&third.dir, "HEAD").await, outside);
        assert!(third.dir.join("other.txt").exists());
        ws_root.settled().await;
        assert_eq!(
            spares(&root, "site"),
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
            spares(&root, "site"),
            vec![format!("{}.{pushed}", branch_key("main"))]
        );
        let fourth = ws_root
            .prepare(&project, &remote, "main", task, &env)
            .await
            .unwrap();
        assert_eq!(rev(&fourth.dir, "HEAD").await, pushed);
        assert_eq!(
            fourth.find_task_commit_on_remote(task).await.unwrap(),
            Some(pushed)
        );
        for ws in [first, second, third, fourth] {
            ws_root.remove(ws);
        }
        ws_root.settled().await;
        ws_root.forget(&project).await;
        assert!(!root.join("mirrors").join("site.git").exists());
        assert!(!root.join("spares").join("site").exists());
    }

    #[tokio::test]
    async fn spares_are_capped_and_can_be_turned_off() {
        let tmp = tempfile::tempdir().unwrap();
        let remote = bare_repo(tmp.path(), true).await;
        let env = GitEnv::default();

        let root = tmp.path().join("capped");
        let capped = GitWorkspaces::new(&root).with_spare_limit(1);
        for name in ["one", "two"] {
            let project = ProjectName::parse(name).unwrap();
            let ws = capped
                .prepare(&project, &remote, "main", TaskId::new(), &env)
                .await
                .unwrap();
            capped.settled().await;
            capped.remove(ws);
        }
        assert!(
            spares(&root, "one").is_empty(),
            "the older spare is removed"
        );
        assert_eq!(spares(&root, "two").len(), 1);

        let root = tmp.path().join("off");
        let off = GitWorkspaces::new(&root).with_spare_limit(0);
        let project = ProjectName::parse("three").unwrap();
        for _ in 0..2 {
            let ws = off
                .prepare(&project, &remote, "main", TaskId::new(), &env)
                .await
                .unwrap();
            off.settled().await;
            assert!(ws.dir.join("README.md").exists());
            off.remove(ws);
        }
        assert!(!root.join("spares").exists());
    }

    #[tokio::test]
    async fn refill_removes_abandoned_clones_but_not_live_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let remote = bare_repo(tmp.path(), true).await;
        let root = tmp.path().join("git");
        let ws_root = GitWorkspaces::new(&root);
        let project = ProjectName::parse("site").unwrap();
        let spares_dir = root.join("spares").join("site");
        std::fs::create_dir_all(&spares_dir).unwrap();
        for name in [".tmp-crashed", ".tmp-live", ".trash-half-deleted"] {
            std::fs::create_dir(spares_dir.join(name)).unwrap();
            std::fs::write(spares_dir.join(name).join("f"), "x").unwrap();
        }
        let status = std::process::Command::new("touch")
            .args(["-d", "1 hour ago"])
            .arg(spares_dir.join(".tmp-crashed"))
            .status()
            .unwrap();
        assert!(status.success());
        let ws = ws_root
            .prepare(&project, &remote, "main", TaskId::new(), &GitEnv::default())
            .await
            .unwrap();
        ws_root.settled().await;
        let mut left: Vec<String> = std::fs::read_dir(&spares_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left.len(), 2, "{left:?}");
        assert_eq!(left[0], ".tmp-live");
        assert!(left[1].starts_with(&branch_key("main")), "{left:?}");
        ws_root.remove(ws);
    }

    #[tokio::test]
    async fn a_commit_message_larger_than_one_argv_argument_is_committed_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let remote = bare_repo(tmp.path(), true).await;
        let ws_root = GitWorkspaces::new(tmp.path().join("git"));
        let project = ProjectName::parse("site").unwrap();
        let task = TaskId::new();
        let ws = ws_root
            .prepare(&project, &remote, "main", task, &GitEnv::default())
            .await
            .unwrap();
        std::fs::write(ws.dir.join("a.txt"), "a").unwrap();
        // Linux refuses a single argument over 128 KiB (MAX_ARG_STRLEN).
        let message = format!("Big prompt\n\n{}\n# not a comment", "x".repeat(300 * 1024));
        let sha = ws
            .commit_all(&message, Some(task), &Author::default())
            .await
            .unwrap()
            .unwrap();
        let body = git(
            Some(&ws.dir),
            &["log", "-1", "--format=%B", &sha],
            &GitEnv::default(),
        )
        .await
        .unwrap();
        assert_eq!(body.trim_end(), format!("{message}\n\nRdev-Task: {task}"));
        ws_root.remove(ws);
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
}
