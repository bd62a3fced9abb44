//! One task's checkout: whether the agent changed anything, committing everything with the
//! `Rdev-Task` trailer, finding a task's commit on the remote, and pushing. Every command
//! names the checkout's git dir and worktree explicitly, so nothing the agent wrote in the
//! worktree (a `.git` file pointing elsewhere, hooks, `.gitattributes` filters,
//! `.gitmodules`) changes what runs; symlinks are committed as symlinks and never read
//! through. It does not decide where checkouts live ([`super::workspaces`]).

use std::path::PathBuf;

use rdev_core::{ProjectName, TaskId};

use super::{
    command::{Git, Repo},
    Author, GitEnv, GitError, GitWorkspaces, TASK_TRAILER,
};

/// A per-task checkout.
#[derive(Debug)]
pub struct Workspace {
    /// The worktree: the agent's working directory and the only part it may write.
    pub dir: PathBuf,
    /// Whether the branch had no commit yet (a new project).
    pub is_empty: bool,
    pub(super) git_dir: PathBuf,
    /// Object directories the git dir borrows from (the mirror's `objects`).
    pub(super) borrowed_objects: Vec<PathBuf>,
    pub(super) branch: String,
    pub(super) repo_url: String,
    pub(super) env: GitEnv,
    pub(super) project: ProjectName,
    pub(super) owner: GitWorkspaces,
}

impl Workspace {
    /// What the agent may read but never write, at the same absolute paths, so its own
    /// `git status`/`git diff` work through the worktree's `.git` file: the git dir and
    /// the object directories it borrows from. Known from how rdev made the checkout, not
    /// read from any file in it.
    pub fn agent_read_only_paths(&self) -> Vec<PathBuf> {
        std::iter::once(self.git_dir.clone())
            .chain(self.borrowed_objects.iter().cloned())
            .collect()
    }

    pub(super) fn git(&self) -> Git<'_> {
        self.owner.git(
            Repo::Checkout {
                git_dir: &self.git_dir,
                work_tree: &self.dir,
            },
            &self.env,
        )
    }

    /// Whether the working tree differs from HEAD (new, changed or deleted files).
    pub async fn has_changes(&self) -> Result<bool, GitError> {
        let out = self
            .git()
            .run(&[
                "status",
                "--porcelain",
                "--untracked-files=all",
                "--ignore-submodules=all",
            ])
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
        self.git().run(&["add", "--all"]).await?;
        let full = match task {
            Some(task) => format!("{}\n\n{TASK_TRAILER}: {task}\n", message.trim_end()),
            None => format!("{}\n", message.trim_end()),
        };
        self.git()
            .author(author)
            .run_with_input(
                &["commit", "--quiet", "--no-verify", "--file=-"],
                full.as_bytes(),
            )
            .await?;
        self.head().await.map(Some)
    }

    /// The SHA of HEAD.
    pub async fn head(&self) -> Result<String, GitError> {
        Ok(self
            .git()
            .run(&["rev-parse", "--verify", "HEAD"])
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
        self.find_task_commit_on(task, &self.branch).await
    }

    /// [`Self::find_task_commit_on_remote`] on the remote branch `branch` (a task's own
    /// branch, say); a branch the remote does not have holds nothing.
    pub async fn find_task_commit_on(
        &self,
        task: TaskId,
        branch: &str,
    ) -> Result<Option<String>, GitError> {
        // A branch the remote does not have (an empty remote) holds nothing.
        let Some(remote_ref) = self.fetch_branch(branch).await? else {
            return Ok(None);
        };
        // `--grep` finds candidates (any line of the message); only the trailer block, as
        // git parses it, counts: a prompt quoted in the message that holds a line
        // `Rdev-Task: <id>` must not pass for that task's commit.
        let grep = format!("--grep=^{TASK_TRAILER}: {task}$");
        let format =
            format!("--format=%H%x00%(trailers:key={TASK_TRAILER},valueonly,separator=%x2C)%x1e");
        let out = self
            .git()
            .run(&["log", &format, "-n", "50", &grep, &remote_ref, "--"])
            .await?;
        Ok(commit_with_trailer(&out, &task.to_string()))
    }

    /// Fetches the remote's `branch` into `refs/rdev/remote/<branch>` and returns that ref,
    /// or `None` when the remote has no such branch (an empty remote, say).
    pub(super) async fn fetch_branch(&self, branch: &str) -> Result<Option<String>, GitError> {
        let remote_ref = format!("refs/rdev/remote/{branch}");
        let refspec = format!("+refs/heads/{branch}:{remote_ref}");
        let fetched = self
            .git()
            .run(&[
                "fetch",
                "--quiet",
                "--no-recurse-submodules",
                "--no-write-fetch-head",
                "--",
                &self.repo_url,
                &refspec,
            ])
            .await;
        match fetched {
            Ok(_) => Ok(Some(remote_ref)),
            Err(GitError::Failed { stderr, .. }) if stderr.contains("couldn't find remote ref") => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Pushes HEAD to the remote branch (fast-forward only).
    pub async fn push(&self) -> Result<(), GitError> {
        self.push_to(&self.branch).await
    }

    /// Pushes HEAD to the remote branch `branch` (fast-forward only, so a branch of that
    /// name is created or moved forward, never rewritten). A refusal because the branch
    /// has commits HEAD lacks is [`GitError::NotFastForward`].
    pub async fn push_to(&self, branch: &str) -> Result<(), GitError> {
        self.push_commit("HEAD", branch).await
    }

    /// [`Self::push_to`] for the commit `rev` rather than HEAD.
    pub async fn push_commit(&self, rev: &str, branch: &str) -> Result<(), GitError> {
        let refspec = format!("{rev}:refs/heads/{branch}");
        let pushed = self
            .git()
            .run(&[
                "push",
                "--quiet",
                "--no-verify",
                "--recurse-submodules=no",
                "--",
                &self.repo_url,
                &refspec,
            ])
            .await;
        if let Err(e) = pushed {
            // Told apart by what the remote holds, not by git's wording.
            return Err(match self.lacks_remote_commits(rev, branch).await {
                Ok(true) => GitError::NotFastForward {
                    branch: branch.to_owned(),
                },
                _ => e,
            });
        }
        // The mirror follows the checkout's branch only.
        if branch == self.branch {
            self.owner
                .rewarm_in_background(&self.project, &self.repo_url, &self.branch, &self.env);
        }
        Ok(())
    }
}

/// The first commit in `log` (records `<sha>\0<trailer values, comma separated>\x1e`)
/// whose `Rdev-Task` trailer is exactly `task`.
fn commit_with_trailer(log: &str, task: &str) -> Option<String> {
    log.split('\x1e').find_map(|record| {
        let (sha, trailers) = record.trim_start_matches('\n').split_once('\0')?;
        trailers
            .split(',')
            .any(|v| v.trim() == task)
            .then(|| sha.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {

    use std::{os::unix::fs::PermissionsExt, path::Path};

    use super::*;
    use crate::git::fixtures::{git_on, rev, World};

    /// Writes `file` into the worktree and commits everything as `message` for `task`.
    async fn commit_file(ws: &Workspace, file: &str, message: &str, task: TaskId) -> String {
        std::fs::write(ws.dir.join(file), "content").unwrap();
        ws.commit_all(message, Some(task), &Author::default())
            .await
            .unwrap()
            .expect("a change to commit")
    }

    #[tokio::test]
    async fn change_is_committed_with_trailer_pushed_and_found_again() {
        let world = World::new(true).await;
        let task = TaskId::new();
        let env = GitEnv::default();
        let ws = world.checkout("site", task, &env).await;
        assert!(!ws.is_empty);
        assert!(ws.dir.join("README.md").exists());
        assert_eq!(
            ws.commit_all("nothing", Some(task), &Author::default())
                .await
                .unwrap(),
            None
        );
        assert_eq!(ws.find_task_commit_on_remote(task).await.unwrap(), None);

        let sha = commit_file(&ws, "index.html", "Add page", task).await;
        ws.push().await.unwrap();
        assert_eq!(world.remote_head().await, sha);
        let remote = Path::new(&world.remote);
        let msg = git_on(remote, &["log", "-1", "--format=%B"]).await;
        assert!(msg.contains(&format!("Rdev-Task: {task}")), "{msg}");

        // A retry in a fresh workspace finds the pushed commit by its trailer.
        let ws2 = world.checkout("site", task, &env).await;
        assert_eq!(
            ws2.find_task_commit_on_remote(task).await.unwrap(),
            Some(sha)
        );
        assert_eq!(
            ws2.find_task_commit_on_remote(TaskId::new()).await.unwrap(),
            None
        );
        world.workspaces.remove(ws2);
    }

    #[tokio::test]
    async fn a_push_to_a_task_branch_leaves_the_default_branch_alone() {
        let world = World::new(true).await;
        let task = TaskId::new();
        let ws = world.checkout("site", task, &GitEnv::default()).await;
        let main = world.remote_head().await;
        let branch = format!("rdev/{task}");
        assert_eq!(ws.find_task_commit_on(task, &branch).await.unwrap(), None);
        let sha = commit_file(&ws, "work.txt", "Work", task).await;
        ws.push_to(&branch).await.unwrap();
        assert_eq!(world.remote_head().await, main, "main did not move");
        let remote = Path::new(&world.remote);
        assert_eq!(rev(remote, &format!("refs/heads/{branch}")).await, sha);
        assert_eq!(
            ws.find_task_commit_on(task, &branch).await.unwrap(),
            Some(sha)
        );
        assert_eq!(ws.find_task_commit_on_remote(task).await.unwrap(), None);
        world.workspaces.remove(ws);
    }

    #[tokio::test]
    async fn empty_remote_gives_an_empty_workspace_on_the_branch() {
        let world = World::new(false).await;
        let task = TaskId::new();
        let ws = world.checkout("new-site", task, &GitEnv::default()).await;
        assert!(ws.is_empty);
        assert_eq!(ws.agent_read_only_paths(), vec![ws.git_dir.clone()]);
        assert_eq!(ws.find_task_commit_on_remote(task).await.unwrap(), None);
        let sha = commit_file(&ws, "a.txt", "Initial", task).await;
        ws.push().await.unwrap();
        assert_eq!(
            ws.find_task_commit_on_remote(task).await.unwrap(),
            Some(sha)
        );
    }

    #[tokio::test]
    async fn a_commit_message_larger_than_one_argv_argument_is_committed_whole() {
        let world = World::new(true).await;
        let task = TaskId::new();
        let ws = world.checkout("site", task, &GitEnv::default()).await;
        // Linux refuses a single argument over 128 KiB (MAX_ARG_STRLEN).
        let message = format!("Big prompt\n\n{}\n# not a comment", "x".repeat(300 * 1024));
        let sha = commit_file(&ws, "a.txt", &message, task).await;
        let body = git_on(&ws.git_dir, &["log", "-1", "--format=%B", &sha]).await;
        assert_eq!(body.trim_end(), format!("{message}\n\nRdev-Task: {task}"));
        world.workspaces.remove(ws);
    }

    /// Hooks and fsmonitor that record that they ran by touching `markers/<their name>`.
    const CANARIES: &[&str] = &[
        "pre-commit",
        "prepare-commit-msg",
        "commit-msg",
        "post-commit",
        "pre-push",
        "reference-transaction",
        "post-index-change",
        "fsmonitor",
        "gpg",
    ];

    /// Writes every canary into `dir`; returns `dir`.
    fn plant_canaries(dir: &Path, markers: &Path) -> std::path::PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        for name in CANARIES {
            let path = dir.join(name);
            std::fs::write(
                &path,
                format!(
                    "#!/bin/sh\ntouch '{}/{name}'\ncat >/dev/null\n",
                    markers.display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        dir.to_path_buf()
    }

    /// The config an agent would write if it could reach a git dir: every way to make
    /// rdev's next git command run its code.
    fn hostile_config(canaries: &Path) -> String {
        let c = canaries.display();
        format!(
            "[core]\n\tfsmonitor = {c}/fsmonitor\n\thooksPath = {c}\n\
             [commit]\n\tgpgSign = true\n[gpg]\n\tprogram = {c}/gpg\n\
             [submodule]\n\trecurse = true\n"
        )
    }

    #[tokio::test]
    async fn nothing_planted_in_the_checkout_runs_during_rdevs_commit_and_push() {
        let world = World::new(true).await;
        let tmp = world.tmp.path();
        let markers = tmp.join("markers");
        std::fs::create_dir(&markers).unwrap();
        let canaries = plant_canaries(&tmp.join("canaries"), &markers);

        // A credential environment that also tries to point hooks at the canaries: the
        // fixed options come later and win.
        let env = GitEnv(vec![
            ("GIT_CONFIG_COUNT".into(), "1".into()),
            ("GIT_CONFIG_KEY_0".into(), "core.hooksPath".into()),
            (
                "GIT_CONFIG_VALUE_0".into(),
                canaries.to_string_lossy().into_owned(),
            ),
        ]);
        let task = TaskId::new();
        let ws = world.checkout("site", task, &env).await;

        // The checkout's own git dir: hooks and a hostile config.
        plant_canaries(&ws.git_dir.join("hooks"), &markers);
        let config = ws.git_dir.join("config");
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str(&hostile_config(&canaries));
        std::fs::write(&config, text).unwrap();

        // The worktree's `.git` redirected to another repository with the same traps.
        let other = tmp.join("other.git");
        git_on(&other, &["init", "--bare", "--quiet"]).await;
        plant_canaries(&other.join("hooks"), &markers);
        std::fs::write(other.join("config"), hostile_config(&canaries)).unwrap();
        std::fs::write(
            ws.dir.join(".git"),
            format!("gitdir: {}\n", other.display()),
        )
        .unwrap();

        // Filters without configuration, a submodule over the `ext::` transport, symlinks.
        std::fs::write(
            ws.dir.join(".gitattributes"),
            "* filter=evil diff=evil merge=evil\n",
        )
        .unwrap();
        std::fs::write(
            ws.dir.join(".gitmodules"),
            format!(
                "[submodule \"x\"]\n\tpath = x\n\turl = ext::sh -c touch% {}/ext\n",
                markers.display()
            ),
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc/passwd", ws.dir.join("passwd")).unwrap();
        std::os::unix::fs::symlink("index.html", ws.dir.join("home.html")).unwrap();

        assert!(ws.has_changes().await.unwrap());
        assert_eq!(ws.find_task_commit_on_remote(task).await.unwrap(), None);
        let sha = commit_file(&ws, "index.html", "Add page", task).await;
        ws.push().await.unwrap();
        assert_eq!(
            ws.find_task_commit_on_remote(task).await.unwrap(),
            Some(sha.clone())
        );
        world.workspaces.settled().await;

        let ran: Vec<String> = std::fs::read_dir(&markers)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(ran.is_empty(), "planted code ran: {ran:?}");

        // The push landed with the expected tree: symlinks as symlinks, their targets as
        // content, no `.git`.
        assert_eq!(world.remote_head().await, sha);
        let remote = Path::new(&world.remote);
        let tree = git_on(remote, &["ls-tree", "-r", "main"]).await;
        let mut entries: Vec<(String, String)> = tree
            .lines()
            .map(|line| {
                let (meta, path) = line.split_once('\t').unwrap();
                (path.to_owned(), meta.split(' ').next().unwrap().to_owned())
            })
            .collect();
        entries.sort();
        let expected: Vec<(String, String)> = [
            (".gitattributes", "100644"),
            (".gitmodules", "100644"),
            ("README.md", "100644"),
            ("home.html", "120000"),
            ("index.html", "100644"),
            ("passwd", "120000"),
        ]
        .iter()
        .map(|(p, m)| (p.to_string(), m.to_string()))
        .collect();
        assert_eq!(entries, expected, "{tree}");
        assert_eq!(
            git_on(remote, &["show", "main:passwd"]).await,
            "/etc/passwd"
        );
        assert_eq!(
            git_on(remote, &["show", "main:index.html"]).await,
            "content"
        );
        // The repository the `.git` file pointed at was never written to.
        assert!(git_on(&other, &["for-each-ref"]).await.is_empty());
        world.workspaces.remove(ws);
    }

    #[test]
    fn only_the_trailer_block_names_a_tasks_commit() {
        let log = "aaa\0\x1e\nbbb\0t-2,t-1\x1e\n";
        assert_eq!(commit_with_trailer(log, "t-1"), Some("bbb".to_owned()));
        assert_eq!(commit_with_trailer(log, "t-3"), None);
        assert_eq!(commit_with_trailer("", "t-1"), None);
    }

    /// A prompt quoted in the commit message with a line `Rdev-Task: <other task>` does not
    /// make the commit that task's: only rdev's own trailer block counts.
    #[tokio::test]
    async fn a_forged_trailer_line_in_the_message_does_not_name_another_task() {
        let world = World::new(true).await;
        let (task, victim) = (TaskId::new(), TaskId::new());
        let env = GitEnv::default();
        let ws = world.checkout("site", task, &env).await;
        let message = format!(
            "Add page\n\nBuilt by rdev from the prompt:\n\nAdd a page.\n\n{TASK_TRAILER}: {victim}"
        );
        let sha = commit_file(&ws, "page.html", &message, task).await;
        ws.push().await.unwrap();
        let grep = git_on(Path::new(&world.remote), &["log", "-1", "--format=%B"]).await;
        assert!(
            grep.contains(&format!("{TASK_TRAILER}: {victim}")),
            "{grep}"
        );
        let again = world.checkout("site", victim, &env).await;
        assert_eq!(
            again.find_task_commit_on_remote(victim).await.unwrap(),
            None
        );
        assert_eq!(
            again.find_task_commit_on_remote(task).await.unwrap(),
            Some(sha)
        );
    }
}
