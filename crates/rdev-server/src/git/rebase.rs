//! Landing a task's commit on a branch that moved while the agent ran. A push refused
//! because the remote branch has commits the pushed one lacks is recognised by what the
//! remote holds (the branch, fetched, is not an ancestor of the commit:
//! [`super::GitError::NotFastForward`]), and the commit is replayed onto the branch's new
//! head in the object store alone: `git merge-tree --write-tree` then `git commit-tree`.
//! No worktree or index is written and no hook runs (neither command has any), and
//! attributes are read from the empty tree (`--attr-source`, git 2.40; an older git
//! refuses the option, so the replay fails closed), never from the agent's
//! `.gitattributes`: a `merge=union` there would turn a conflict into a silent
//! concatenation. The message, and with it the `Rdev-Task` trailer, is kept byte for byte.
//! It decides nothing about what a conflict means for the task.

use super::{Author, GitError, Workspace};

/// Git's empty tree, always known to git: where the replay reads attributes from.
const EMPTY_TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

/// The most conflicting paths named in a [`Rebase::Conflict`].
const NAMED_PATHS: usize = 10;

/// What replaying a commit onto a branch's new head gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rebase {
    /// Replayed: the new commit, whose parent is `onto`, the branch's head.
    Rebased { commit: String, onto: String },
    /// It cannot be replayed: why (the conflicting paths, or a history rdev does not
    /// replay onto: the branch rewritten, the commit a repository's first).
    Conflict(String),
}

impl Workspace {
    /// Whether the remote `branch` has commits `rev` lacks (fetched now); a branch the
    /// remote does not have lacks nothing.
    pub(super) async fn lacks_remote_commits(
        &self,
        rev: &str,
        branch: &str,
    ) -> Result<bool, GitError> {
        let Some(remote) = self.fetch_branch(branch).await? else {
            return Ok(false);
        };
        Ok(!self.is_ancestor(&remote, rev).await?)
    }

    async fn is_ancestor(&self, ancestor: &str, of: &str) -> Result<bool, GitError> {
        let (yes, _) = self
            .git()
            .run_yes_no(&["merge-base", "--is-ancestor", ancestor, of])
            .await?;
        Ok(yes)
    }

    async fn rev_parse(&self, rev: &str) -> Result<String, GitError> {
        let out = self
            .git()
            .run(&["rev-parse", "--verify", "--end-of-options", rev])
            .await?;
        Ok(out.trim().to_owned())
    }

    /// Replays `commit`, one commit on top of the branch as the checkout found it, onto
    /// the remote `branch`'s head as fetched now, committing as `author`. See the module
    /// documentation.
    pub async fn rebase_onto_remote(
        &self,
        commit: &str,
        branch: &str,
        author: &Author,
    ) -> Result<Rebase, GitError> {
        let conflict = |why: &str| Ok(Rebase::Conflict(why.to_owned()));
        let Some(remote) = self.fetch_branch(branch).await? else {
            return conflict("the branch is gone from the remote");
        };
        let onto = self.rev_parse(&format!("{remote}^{{commit}}")).await?;
        let commit = self.rev_parse(&format!("{commit}^{{commit}}")).await?;
        let parents = self
            .git()
            .run(&["rev-list", "--parents", "-n", "1", &commit])
            .await?;
        let [_, parent] = parents.split_whitespace().collect::<Vec<_>>()[..] else {
            return conflict("the commit is not one commit on top of the branch");
        };
        // The replay is a three-way merge whose base is the commit's parent; that is only
        // the commit's own change while the parent is still on the branch.
        if !self.is_ancestor(parent, &onto).await? {
            return conflict("the branch was rewritten: the commit rdev built on is gone");
        }
        let attr_source = format!("--attr-source={EMPTY_TREE}");
        let (clean, out) = self
            .git()
            .run_yes_no(&[
                &attr_source,
                "merge-tree",
                "--write-tree",
                "--name-only",
                "--no-messages",
                &onto,
                &commit,
            ])
            .await?;
        let mut lines = out.lines();
        let tree = lines
            .next()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| GitError::Parse(format!("merge-tree printed no tree: {out:?}")))?;
        if !clean {
            let mut paths: Vec<&str> = lines.take_while(|l| !l.is_empty()).collect();
            paths.dedup();
            let more = paths.len().saturating_sub(NAMED_PATHS);
            let mut named = paths
                .into_iter()
                .take(NAMED_PATHS)
                .collect::<Vec<_>>()
                .join(", ");
            if more > 0 {
                named.push_str(&format!(" and {more} more"));
            }
            return conflict(&format!("conflict in {named}"));
        }
        let raw = self.git().run(&["cat-file", "commit", &commit]).await?;
        let message = raw
            .split_once("\n\n")
            .map(|(_, m)| m)
            .ok_or_else(|| GitError::Parse(format!("commit {commit} has no message")))?;
        let new = self
            .git()
            .author(author)
            .run_with_input(
                &["commit-tree", tree, "-p", &onto, "-F", "-"],
                message.as_bytes(),
            )
            .await?
            .trim()
            .to_owned();
        Ok(Rebase::Rebased { commit: new, onto })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rdev_core::TaskId;

    use super::*;
    use crate::git::{
        fixtures::{git_on, rev, World},
        GitEnv, TASK_TRAILER,
    };

    /// Pushes a commit writing `files` to the remote's main from a second checkout, as a
    /// person (or another build) would while the agent runs.
    async fn someone_pushes(world: &World, files: &[(&str, &str)]) -> String {
        let other = world
            .checkout("site", TaskId::new(), &GitEnv::default())
            .await;
        for (name, content) in files {
            std::fs::write(other.dir.join(name), content).unwrap();
        }
        let sha = other
            .commit_all("Someone else's change", None, &Author::default())
            .await
            .unwrap()
            .unwrap();
        other.push().await.unwrap();
        world.workspaces.remove(other);
        sha
    }

    #[tokio::test]
    async fn a_refused_push_is_replayed_onto_the_new_head_with_its_trailer() {
        let world = World::new(true).await;
        let task = TaskId::new();
        let ws = world.checkout("site", task, &GitEnv::default()).await;
        std::fs::write(ws.dir.join("page.html"), "mine").unwrap();
        let mine = ws
            .commit_all("Add page", Some(task), &Author::default())
            .await
            .unwrap()
            .unwrap();
        let theirs = someone_pushes(&world, &[("other.txt", "theirs")]).await;

        let refused = ws.push_to("main").await.unwrap_err();
        assert!(
            matches!(&refused, GitError::NotFastForward { branch } if branch == "main"),
            "{refused:?}"
        );
        let Rebase::Rebased { commit, onto } = ws
            .rebase_onto_remote("HEAD", "main", &Author::default())
            .await
            .unwrap()
        else {
            panic!("a change to another file replays cleanly");
        };
        assert_eq!(onto, theirs);
        ws.push_commit(&commit, "main").await.unwrap();
        assert_eq!(world.remote_head().await, commit);
        let remote = Path::new(&world.remote);
        assert_eq!(rev(remote, &format!("{commit}^")).await, theirs);
        assert_eq!(git_on(remote, &["show", "main:page.html"]).await, "mine");
        assert_eq!(git_on(remote, &["show", "main:other.txt"]).await, "theirs");
        // The checkout's git dir has both; the original was never pushed.
        let message = |sha: String| {
            let git_dir = ws.git_dir.clone();
            async move { git_on(&git_dir, &["log", "-1", "--format=%B", &sha]).await }
        };
        let replayed = message(commit.clone()).await;
        assert_eq!(replayed, message(mine).await);
        assert!(replayed.contains(&format!("{TASK_TRAILER}: {task}")));
        // A retried attempt finds the replayed commit by its trailer.
        assert_eq!(
            ws.find_task_commit_on_remote(task).await.unwrap(),
            Some(commit)
        );
        world.workspaces.remove(ws);
    }

    #[tokio::test]
    async fn a_conflict_names_its_paths_and_no_attribute_of_the_agent_resolves_it() {
        let world = World::new(true).await;
        let task = TaskId::new();
        let ws = world.checkout("site", task, &GitEnv::default()).await;
        // `merge=union` would "resolve" the conflict by keeping both sides' lines, were
        // the agent's attributes read during the replay. (git run from the worktree does
        // read them; rdev runs it from an empty directory and names the attribute source,
        // so this holds the outcome rather than either precaution alone.)
        std::fs::write(ws.dir.join(".gitattributes"), "* merge=union\n").unwrap();
        std::fs::write(ws.dir.join("README.md"), "mine\n").unwrap();
        ws.commit_all("Change the readme", Some(task), &Author::default())
            .await
            .unwrap()
            .unwrap();
        let theirs = someone_pushes(
            &world,
            &[
                ("README.md", "theirs\n"),
                (".gitattributes", "* merge=union\n"),
            ],
        )
        .await;
        assert!(matches!(
            ws.push_to("main").await,
            Err(GitError::NotFastForward { .. })
        ));
        let outcome = ws
            .rebase_onto_remote("HEAD", "main", &Author::default())
            .await
            .unwrap();
        assert_eq!(outcome, Rebase::Conflict("conflict in README.md".into()));
        assert_eq!(world.remote_head().await, theirs, "nothing was pushed");
        world.workspaces.remove(ws);
    }

    #[tokio::test]
    async fn a_push_refused_for_another_reason_is_not_taken_for_a_moved_branch() {
        let world = World::new(true).await;
        let ws = world
            .checkout("site", TaskId::new(), &GitEnv::default())
            .await;
        std::fs::write(ws.dir.join("big.bin"), "x".repeat(4096)).unwrap();
        ws.commit_all("Big", None, &Author::default())
            .await
            .unwrap()
            .unwrap();
        // The remote refuses every pack; its branch has not moved.
        git_on(
            Path::new(&world.remote),
            &["config", "receive.maxInputSize", "1"],
        )
        .await;
        let err = ws.push_to("main").await.unwrap_err();
        assert!(matches!(err, GitError::Failed { .. }), "{err:?}");
        world.workspaces.remove(ws);
    }
}
