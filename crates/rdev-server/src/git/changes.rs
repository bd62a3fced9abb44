//! What a push would send, read from the checkout's object store for push protection: every
//! commit between the commit the checkout started from (its `refs/remotes/origin/<branch>`,
//! or nothing for a repository that was empty) and HEAD, and for each the files it adds or
//! changes, with their new contents and, for a changed file, the previous ones. Symlinks
//! are blobs whose content is their target; nothing is ever read from the worktree, so
//! nothing the agent placed there (a symlink, a `.git` file, `.gitattributes`) changes
//! what is read. The total size is checked before any content is read: a change too large
//! to read is reported as such ([`Unpushed::TooLarge`]), never as empty.

use std::{collections::HashMap, sync::Arc};

use super::{GitError, Workspace};

/// How much [`Workspace::unpushed_changes`] reads at most.
#[derive(Debug, Clone, Copy)]
pub struct ChangeLimits {
    /// Bytes of file contents (new and previous versions together).
    pub max_bytes: u64,
    /// Changed files, counted per commit.
    pub max_files: usize,
    /// Commits between the remote's head and HEAD.
    pub max_commits: usize,
}

/// One file a commit adds or changes.
#[derive(Debug, Clone)]
pub struct ChangedFile {
    /// The commit that made the change.
    pub commit: String,
    /// Its path in the repository, as git stores it (bytes, `/`-separated).
    pub path: Vec<u8>,
    /// Whether the path is new in this commit (its name is new content too).
    pub added: bool,
    /// Whether it is a symlink (its content is the target).
    pub symlink: bool,
    /// The contents after the commit.
    pub new: Arc<[u8]>,
    /// The contents before it, for a file that was changed in place (not for a new file or
    /// one that changed between file and symlink).
    pub old: Option<Arc<[u8]>>,
}

impl ChangedFile {
    /// The path as text (invalid UTF-8 replaced), for messages.
    pub fn path_lossy(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
}

/// What [`Workspace::unpushed_changes`] found.
#[derive(Debug)]
pub enum Unpushed {
    /// The changed files of every commit to push, oldest commit first.
    Changes {
        commits: usize,
        files: Vec<ChangedFile>,
        /// Bytes of contents read.
        bytes: u64,
    },
    /// More than the limits allow; nothing was read. The reason says what was too large.
    TooLarge(String),
}

/// One `git diff-tree --raw` entry that has content to read.
struct Entry {
    commit: String,
    path: Vec<u8>,
    added: bool,
    symlink: bool,
    new: String,
    old: Option<String>,
}

const SYMLINK: &str = "120000";
const GITLINK: &str = "160000";

impl Workspace {
    /// The commits a push of HEAD would send (those not on the branch the checkout was
    /// made from) and the files they add or change, read from the object store. See the
    /// module documentation.
    pub async fn unpushed_changes(&self, limits: &ChangeLimits) -> Result<Unpushed, GitError> {
        let git = self.git();
        let base = if self.is_empty {
            None
        } else {
            let tracking = format!("refs/remotes/origin/{}^{{commit}}", self.branch);
            let sha = git
                .run(&["rev-parse", "--verify", "--quiet", &tracking])
                .await?;
            Some(sha.trim().to_owned())
        };
        let mut args = vec!["rev-list", "--reverse", "HEAD"];
        if let Some(base) = &base {
            args.extend(["--not", base.as_str()]);
        }
        args.push("--");
        let commits = git.run(&args).await?;
        let commits: Vec<&str> = commits.lines().filter(|l| !l.is_empty()).collect();
        if commits.is_empty() {
            return Ok(Unpushed::Changes {
                commits: 0,
                files: Vec::new(),
                bytes: 0,
            });
        }
        if commits.len() > limits.max_commits {
            return Ok(Unpushed::TooLarge(format!(
                "{} commits to push; push protection reads at most {}",
                commits.len(),
                limits.max_commits
            )));
        }
        let input = commits.join("\n") + "\n";
        let raw = git
            .run_bytes_with_input(
                &[
                    "diff-tree",
                    "--stdin",
                    "-r",
                    "-z",
                    "--root",
                    "--no-renames",
                    "--no-ext-diff",
                    "--no-textconv",
                ],
                input.as_bytes(),
            )
            .await?;
        let entries = parse_diff_tree(&raw)?;
        if entries.len() > limits.max_files {
            return Ok(Unpushed::TooLarge(format!(
                "{} changed files; push protection reads at most {}",
                entries.len(),
                limits.max_files
            )));
        }
        let mut wanted: Vec<&str> = entries
            .iter()
            .flat_map(|e| std::iter::once(e.new.as_str()).chain(e.old.as_deref()))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        if wanted.is_empty() {
            return Ok(Unpushed::Changes {
                commits: commits.len(),
                files: Vec::new(),
                bytes: 0,
            });
        }
        let input = wanted.join("\n") + "\n";
        let sizes = git
            .run_with_input(&["cat-file", "--batch-check"], input.as_bytes())
            .await?;
        let mut bytes = 0u64;
        for line in sizes.lines() {
            let size = line
                .rsplit(' ')
                .next()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| GitError::Parse(format!("cat-file --batch-check: {line:?}")))?;
            bytes = bytes.saturating_add(size);
        }
        if bytes > limits.max_bytes {
            return Ok(Unpushed::TooLarge(format!(
                "the changed files hold {bytes} bytes; push protection reads at most {}",
                limits.max_bytes
            )));
        }
        let contents = git
            .run_bytes_with_input(&["cat-file", "--batch"], input.as_bytes())
            .await?;
        let blobs = parse_batch(&contents)?;
        let blob = |sha: &str| {
            blobs
                .get(sha)
                .cloned()
                .ok_or_else(|| GitError::Parse(format!("object {sha} was not read")))
        };
        let files = entries
            .into_iter()
            .map(|e| {
                Ok(ChangedFile {
                    new: blob(&e.new)?,
                    old: e.old.as_deref().map(blob).transpose()?,
                    commit: e.commit,
                    path: e.path,
                    added: e.added,
                    symlink: e.symlink,
                })
            })
            .collect::<Result<Vec<_>, GitError>>()?;
        Ok(Unpushed::Changes {
            commits: commits.len(),
            files,
            bytes,
        })
    }
}

/// Parses `git diff-tree --stdin -r -z --root` output: a commit id, then per file
/// `:<old mode> <new mode> <old sha> <new sha> <status>` and the path, each NUL-ended.
/// Keeps files added (`A`), modified (`M`) or changed in type (`T`) whose new side is a
/// file or symlink; deletions and submodules have no content to push.
fn parse_diff_tree(raw: &[u8]) -> Result<Vec<Entry>, GitError> {
    let bad = |what: &str| GitError::Parse(format!("diff-tree output: {what}"));
    let mut tokens = raw.split(|b| *b == 0).filter(|t| !t.is_empty());
    let mut commit = String::new();
    let mut out = Vec::new();
    while let Some(token) = tokens.next() {
        let Some(meta) = token.strip_prefix(b":") else {
            commit = String::from_utf8_lossy(token).trim().to_owned();
            continue;
        };
        let path = tokens.next().ok_or_else(|| bad("a path is missing"))?;
        let meta = std::str::from_utf8(meta).map_err(|_| bad("not text"))?;
        let fields: Vec<&str> = meta.split(' ').collect();
        let [old_mode, new_mode, old_sha, new_sha, status] = fields[..] else {
            return Err(bad(meta));
        };
        let kind = |mode: &str| &mode[..mode.len().min(2)] == "12";
        let added = status.starts_with('A');
        let keep = matches!(status.as_bytes().first(), Some(b'A' | b'M' | b'T'))
            && new_mode != GITLINK
            && !new_mode.starts_with("04");
        if !keep {
            continue;
        }
        let same_kind = !added && old_mode != GITLINK && kind(old_mode) == kind(new_mode);
        out.push(Entry {
            commit: commit.clone(),
            path: path.to_vec(),
            added,
            symlink: new_mode == SYMLINK,
            new: new_sha.to_owned(),
            old: same_kind.then(|| old_sha.to_owned()),
        });
    }
    Ok(out)
}

/// Parses `git cat-file --batch` output: `<sha> <type> <size>\n<content>\n` per object.
fn parse_batch(raw: &[u8]) -> Result<HashMap<String, Arc<[u8]>>, GitError> {
    let bad = |what: String| GitError::Parse(format!("cat-file --batch output: {what}"));
    let mut out = HashMap::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let eol = rest
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(|| bad("a header without an end".into()))?;
        let header = std::str::from_utf8(&rest[..eol]).map_err(|_| bad("header".into()))?;
        let fields: Vec<&str> = header.split(' ').collect();
        let [sha, _kind, size] = fields[..] else {
            return Err(bad(header.chars().take(100).collect()));
        };
        let size: usize = size.parse().map_err(|_| bad(header.to_owned()))?;
        let start = eol + 1;
        let end = start + size;
        if rest.len() < end + 1 {
            return Err(bad(format!("object {sha} is cut short")));
        }
        out.insert(sha.to_owned(), Arc::from(&rest[start..end]));
        rest = &rest[end + 1..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use rdev_core::TaskId;

    use super::*;
    use crate::git::{
        fixtures::{commit, World},
        GitEnv,
    };

    const LIMITS: ChangeLimits = ChangeLimits {
        max_bytes: 1 << 20,
        max_files: 100,
        max_commits: 10,
    };

    fn files(u: Unpushed) -> Vec<ChangedFile> {
        match u {
            Unpushed::Changes { files, .. } => files,
            Unpushed::TooLarge(why) => panic!("too large: {why}"),
        }
    }

    #[tokio::test]
    async fn added_changed_binary_and_symlinked_files_are_read_from_objects() {
        let world = World::new(true).await;
        let ws = world
            .checkout("site", TaskId::new(), &GitEnv::default())
            .await;
        assert!(files(ws.unpushed_changes(&LIMITS).await.unwrap()).is_empty());

        std::fs::write(ws.dir.join("README.md"), "hello\nworld\n").unwrap();
        std::fs::write(ws.dir.join("blob.bin"), b"\x00\x01secret\xff").unwrap();
        std::fs::create_dir(ws.dir.join("sub dir")).unwrap();
        std::fs::write(ws.dir.join("sub dir/n\"ew.txt"), "new\n").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", ws.dir.join("link")).unwrap();
        let sha = commit(&ws, "change").await;
        // What the worktree holds afterwards does not matter: objects are read.
        std::fs::write(ws.dir.join("README.md"), "something else\n").unwrap();
        std::fs::remove_file(ws.dir.join("link")).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", ws.dir.join("link")).unwrap();

        let mut got = files(ws.unpushed_changes(&LIMITS).await.unwrap());
        got.sort_by(|a, b| a.path.cmp(&b.path));
        /// Path, added, symlink, new and old contents.
        type Summary = (String, bool, bool, Vec<u8>, Option<Vec<u8>>);
        let summary: Vec<Summary> = got
            .iter()
            .map(|f| {
                assert_eq!(f.commit, sha);
                (
                    f.path_lossy(),
                    f.added,
                    f.symlink,
                    f.new.to_vec(),
                    f.old.as_ref().map(|o| o.to_vec()),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "README.md".into(),
                    false,
                    false,
                    b"hello\nworld\n".to_vec(),
                    Some(b"hello\n".to_vec())
                ),
                (
                    "blob.bin".into(),
                    true,
                    false,
                    b"\x00\x01secret\xff".to_vec(),
                    None
                ),
                ("link".into(), true, true, b"/etc/passwd".to_vec(), None),
                (
                    "sub dir/n\"ew.txt".into(),
                    true,
                    false,
                    b"new\n".to_vec(),
                    None
                ),
            ]
        );
        world.workspaces.remove(ws);
    }

    #[tokio::test]
    async fn a_first_push_covers_every_commit_from_the_empty_tree() {
        let world = World::new(false).await;
        let ws = world
            .checkout("fresh", TaskId::new(), &GitEnv::default())
            .await;
        assert!(ws.is_empty);
        std::fs::write(ws.dir.join("a.txt"), "one\n").unwrap();
        let first = commit(&ws, "template").await;
        std::fs::remove_file(ws.dir.join("a.txt")).unwrap();
        std::fs::write(ws.dir.join("b.txt"), "two\n").unwrap();
        let second = commit(&ws, "agent").await;
        let got = files(ws.unpushed_changes(&LIMITS).await.unwrap());
        let seen: Vec<(String, String)> = got
            .iter()
            .map(|f| (f.commit.clone(), f.path_lossy()))
            .collect();
        // a.txt is gone from the tip, but its first commit would still be pushed.
        assert_eq!(
            seen,
            vec![(first, "a.txt".to_owned()), (second, "b.txt".to_owned())]
        );
    }

    #[tokio::test]
    async fn changes_beyond_the_limits_are_too_large_not_empty() {
        let world = World::new(true).await;
        let ws = world
            .checkout("site", TaskId::new(), &GitEnv::default())
            .await;
        std::fs::write(ws.dir.join("big.txt"), "x".repeat(5000)).unwrap();
        std::fs::write(ws.dir.join("small.txt"), "x").unwrap();
        commit(&ws, "big").await;
        let small = ChangeLimits {
            max_bytes: 4096,
            ..LIMITS
        };
        match ws.unpushed_changes(&small).await.unwrap() {
            Unpushed::TooLarge(why) => assert!(why.contains("5001 bytes"), "{why}"),
            other => panic!("{other:?}"),
        }
        let few = ChangeLimits {
            max_files: 1,
            ..LIMITS
        };
        assert!(matches!(
            ws.unpushed_changes(&few).await.unwrap(),
            Unpushed::TooLarge(_)
        ));
        let files_read = files(ws.unpushed_changes(&LIMITS).await.unwrap());
        assert_eq!(files_read.len(), 2);
        world.workspaces.remove(ws);
    }

    #[test]
    fn diff_tree_output_with_odd_paths_parses() {
        let z = "0000000000000000000000000000000000000000";
        let a = "1111111111111111111111111111111111111111";
        let b = "2222222222222222222222222222222222222222";
        let raw = format!(
            "c1\0:000000 100644 {z} {a} A\0:odd\0:100644 100644 {a} {b} M\0x.txt\0\
             :100644 000000 {a} {z} D\0gone\0:000000 160000 {z} {a} A\0sub\0\
             :100644 120000 {a} {b} T\0now-a-link\0"
        );
        let e = parse_diff_tree(raw.as_bytes()).unwrap();
        let got: Vec<(&[u8], bool, bool, Option<&str>)> = e
            .iter()
            .map(|e| (e.path.as_slice(), e.added, e.symlink, e.old.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                (&b":odd"[..], true, false, None),
                (&b"x.txt"[..], false, false, Some(a)),
                (&b"now-a-link"[..], false, true, None),
            ]
        );
        assert!(e.iter().all(|e| e.commit == "c1"));
        assert!(parse_batch(b"abc blob 10\nshort\n").is_err());
    }
}
