//! Git workspaces for builds: one warm bare mirror per project (`git clone --mirror` once,
//! `git fetch` per task) and a cheap per-task checkout that shares the mirror's objects
//! (`git clone --shared`). Also committing with the `Rdev-Task` trailer, finding a task's
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
    let mut cmd = Command::new("git");
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    cmd.args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "/bin/false")
        .env("LC_ALL", "C")
        .envs(env.0.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(600), cmd.output())
        .await
        .map_err(|_| GitError::Timeout(Duration::from_secs(600), args.join(" ")))?
        .map_err(|e| GitError::Spawn(e.to_string()))?;
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
}

/// Mirrors and workspaces under one root directory.
#[derive(Debug, Clone)]
pub struct GitWorkspaces {
    root: PathBuf,
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl GitWorkspaces {
    /// Keeps mirrors in `root/mirrors` and checkouts in `root/work`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            locks: Arc::default(),
        }
    }

    fn mirror_dir(&self, project: &ProjectName) -> PathBuf {
        self.root.join("mirrors").join(format!("{project}.git"))
    }

    fn lock(&self, project: &ProjectName) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(locks.entry(project.to_string()).or_default())
    }

    /// Brings the project's mirror up to date, creating it on first use.
    pub async fn refresh_mirror(
        &self,
        project: &ProjectName,
        repo_url: &str,
        env: &GitEnv,
    ) -> Result<PathBuf, GitError> {
        let lock = self.lock(project);
        let _guard = lock.lock().await;
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
        Ok(mirror)
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
        let mirror = self.refresh_mirror(project, repo_url, env).await?;
        // A fresh directory per attempt: an agent orphaned by a crashed worker can never
        // write into the checkout of the attempt that replaced it.
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let dir = self
            .root
            .join("work")
            .join(format!("{project}-{task}-{}", &unique[..8]));
        let _ = tokio::fs::remove_dir_all(&dir).await;
        tokio::fs::create_dir_all(dir.parent().expect("has parent"))
            .await
            .map_err(|e| GitError::Spawn(e.to_string()))?;
        let mirror_s = mirror.to_string_lossy().into_owned();
        let dir_s = dir.to_string_lossy().into_owned();
        let has_branch = git(
            Some(&mirror),
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("refs/heads/{branch}"),
            ],
            env,
        )
        .await
        .is_ok();
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
        Ok(Workspace {
            dir,
            is_empty: !has_branch,
            branch: branch.to_owned(),
            repo_url: repo_url.to_owned(),
            env: env.clone(),
        })
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

    /// Deletes a task's checkout.
    pub async fn remove(&self, ws: Workspace) {
        if let Err(e) = tokio::fs::remove_dir_all(&ws.dir).await {
            tracing::warn!(dir = %ws.dir.display(), error = %e, "could not remove workspace");
        }
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
        git(
            Some(&self.dir),
            &["commit", "--quiet", "--no-verify", "-m", &full],
            &env,
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
        ws_root.remove(ws2).await;
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
