//! Test fixtures for the git module: a bare remote with or without a first commit,
//! workspaces over a temporary directory, and git run on a repository through the same
//! hardened runner rdev uses.

use std::path::{Path, PathBuf};

use rdev_core::{ProjectName, TaskId};

use super::{
    command::{Git, Repo},
    Author, GitEnv, GitWorkspaces, Workspace,
};

/// A bare remote on `main` and [`GitWorkspaces`] over `root`, in a temporary directory.
pub(crate) struct World {
    pub(crate) tmp: tempfile::TempDir,
    pub(crate) remote: String,
    pub(crate) root: PathBuf,
    pub(crate) workspaces: GitWorkspaces,
}

impl World {
    /// The remote holds one commit (`README.md`) when `with_commit`, none otherwise.
    pub(crate) async fn new(with_commit: bool) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let remote = bare_repo(tmp.path(), with_commit).await;
        let root = tmp.path().join("git");
        let workspaces = GitWorkspaces::new(&root);
        Self {
            tmp,
            remote,
            root,
            workspaces,
        }
    }

    /// The commit the remote's `main` points at.
    pub(crate) async fn remote_head(&self) -> String {
        rev(Path::new(&self.remote), "refs/heads/main").await
    }

    /// A checkout of the remote's `main` for `task` of `project`.
    pub(crate) async fn checkout(&self, project: &str, task: TaskId, env: &GitEnv) -> Workspace {
        let project = ProjectName::parse(project).unwrap();
        self.workspaces
            .prepare(&project, &self.remote, "main", task, env)
            .await
            .unwrap()
    }
}

/// Commits everything in `ws` as `message` and returns the commit; panics when nothing
/// changed.
pub(crate) async fn commit(ws: &Workspace, message: &str) -> String {
    ws.commit_all(message, None, &Author::default())
        .await
        .unwrap()
        .expect("a change to commit")
}

/// Runs `git <args>` on the (bare or separate) git directory `git_dir`; panics on failure.
pub(crate) async fn git_on(git_dir: &Path, args: &[&str]) -> String {
    Git::new(Repo::Bare(git_dir), &GitEnv::default())
        .run(args)
        .await
        .unwrap_or_else(|e| panic!("git {args:?}: {e}"))
}

/// The commit `what` names in `git_dir`.
pub(crate) async fn rev(git_dir: &Path, what: &str) -> String {
    git_on(git_dir, &["rev-parse", what])
        .await
        .trim()
        .to_owned()
}

/// A bare repository `dir/remote.git` on `main`, holding one commit with `README.md` when
/// `with_commit`.
pub(crate) async fn bare_repo(dir: &Path, with_commit: bool) -> String {
    let bare = dir.join("remote.git");
    let bare_s = bare.to_string_lossy().into_owned();
    let env = GitEnv::default();
    let none = Git::new(Repo::None, &env);
    none.run(&["init", "--bare", "--quiet", "-b", "main", &bare_s])
        .await
        .unwrap();
    if with_commit {
        let seed = dir.join("seed");
        let seed_s = seed.to_string_lossy().into_owned();
        none.run(&["init", "--quiet", "-b", "main", &seed_s])
            .await
            .unwrap();
        std::fs::write(seed.join("README.md"), "hello\n").unwrap();
        let author = Author::default();
        let git_dir = seed.join(".git");
        let seed_git = Git::new(
            Repo::Checkout {
                git_dir: &git_dir,
                work_tree: &seed,
            },
            &env,
        )
        .author(&author);
        seed_git.run(&["add", "."]).await.unwrap();
        seed_git.run(&["commit", "-qm", "seed"]).await.unwrap();
        seed_git
            .run(&["push", "-q", &bare_s, "main"])
            .await
            .unwrap();
    }
    bare_s
}
