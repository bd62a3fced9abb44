//! Running the `git` binary hardened, the one way rdev runs git. A checkout's worktree is
//! written by an untrusted agent, so nothing in it or in the environment may decide what
//! git executes: every command names its repository explicitly (`--git-dir`, and
//! `--work-tree` for a checkout; nothing is discovered from the working directory, which is
//! an empty directory made for the call), runs with a cleared environment plus an
//! allow-list ([`is_allowed_env`]), no system or global config, an empty `HOME`, and the
//! fixed [`HARDENING`] options (no hooks, no fsmonitor, no `ext::` transport, no submodule
//! recursion, no signing). Credentials arrive only as `GIT_CONFIG_COUNT` entries of a
//! [`GitEnv`]. This module knows nothing about mirrors, spares or tasks.

use std::{
    borrow::Cow,
    ffi::OsString,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tokio::{io::AsyncWriteExt, process::Command};

use super::{Author, GitEnv, GitError};

/// Longest stderr kept in an error message.
const STDERR_SNIPPET: usize = 2_000;

/// How long one git command may run unless configured otherwise (`git_timeout_secs`).
pub const DEFAULT_GIT_TIMEOUT: Duration = Duration::from_secs(600);

/// `-c` options every git command gets ahead of its own arguments. They are passed on the
/// command line (git's `GIT_CONFIG_PARAMETERS`), which git reads after the
/// `GIT_CONFIG_COUNT` credential entries, so no environment entry can override them; the
/// repository's own config (written by rdev, read-only to the agent) cannot either.
pub(crate) const HARDENING: &[&str] = &[
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "protocol.ext.allow=never",
    "submodule.recurse=false",
    "fetch.recurseSubmodules=false",
    "push.recurseSubmodules=no",
    "commit.gpgSign=false",
];

/// Fixed environment variables (beyond `PATH`, `HOME`, `GIT_CEILING_DIRECTORIES`, the
/// author and the credential entries).
const FIXED_ENV: &[(&str, &str)] = &[
    ("LC_ALL", "C"),
    ("GIT_TERMINAL_PROMPT", "0"),
    ("GIT_ASKPASS", "/bin/false"),
    ("GIT_CONFIG_NOSYSTEM", "1"),
    ("GIT_CONFIG_GLOBAL", "/dev/null"),
];

/// Names that may appear in a git command's environment, besides the `GIT_CONFIG_COUNT` /
/// `GIT_CONFIG_KEY_<n>` / `GIT_CONFIG_VALUE_<n>` credential entries.
const ALLOWED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "LC_ALL",
    "GIT_TERMINAL_PROMPT",
    "GIT_ASKPASS",
    "GIT_CONFIG_NOSYSTEM",
    "GIT_CONFIG_GLOBAL",
    "GIT_CEILING_DIRECTORIES",
    "GIT_AUTHOR_NAME",
    "GIT_AUTHOR_EMAIL",
    "GIT_COMMITTER_NAME",
    "GIT_COMMITTER_EMAIL",
];

/// `PATH` when rdev itself has none: git must still find itself and its helpers
/// (`git-remote-https`, `ssh`).
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Whether `name` may be in a git command's environment.
pub(crate) fn is_allowed_env(name: &str) -> bool {
    ALLOWED_ENV.contains(&name) || is_config_entry(name)
}

/// `GIT_CONFIG_COUNT`, `GIT_CONFIG_KEY_<n>` or `GIT_CONFIG_VALUE_<n>`.
fn is_config_entry(name: &str) -> bool {
    name == "GIT_CONFIG_COUNT"
        || ["GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_"].iter().any(|p| {
            name.strip_prefix(p)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
}

/// A remote as git must see it when run from an empty directory: a relative local path
/// (e.g. `data/repos/site.git` under a relative data directory) is made absolute against
/// rdev's working directory; URLs and `host:path` (scp-like SSH) are left alone. Git's own
/// rule: a remote is a local path when it has no `scheme://` and no `:` before the first
/// `/`.
pub(crate) fn remote_url(url: &str) -> Cow<'_, str> {
    if !is_local_remote(url) || Path::new(url).is_absolute() {
        return Cow::Borrowed(url);
    }
    match std::path::absolute(url) {
        Ok(path) => Cow::Owned(path.to_string_lossy().into_owned()),
        Err(_) => Cow::Borrowed(url),
    }
}

/// Whether git reads `url` as a local path: no `scheme://` and no `:` before the first
/// `/` (git's own rule).
pub(crate) fn is_local_remote(url: &str) -> bool {
    let is_url = url
        .split_once("://")
        .is_some_and(|(scheme, _)| !scheme.is_empty() && !scheme.contains('/'));
    let local = match (url.find(':'), url.find('/')) {
        (None, _) => true,
        (Some(colon), Some(slash)) => slash < colon,
        (Some(_), None) => false,
    };
    !is_url && local
}

/// Which repository a git command works on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Repo<'a> {
    /// None (`clone`, `init`, `ls-remote`): git runs in an empty directory and may not look
    /// above it for one.
    None,
    /// A bare repository (a mirror or a remote).
    Bare(&'a Path),
    /// A git directory and its separate worktree (a task's checkout). The worktree's `.git`
    /// file is never consulted.
    Checkout {
        git_dir: &'a Path,
        work_tree: &'a Path,
    },
}

/// One hardened git invocation: the repository, the credential entries, how long it may
/// run and, when it commits, the author.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Git<'a> {
    repo: Repo<'a>,
    env: &'a GitEnv,
    author: Option<&'a Author>,
    timeout: Duration,
}

impl<'a> Git<'a> {
    /// Git on `repo` with `env`'s credential entries.
    pub(crate) fn new(repo: Repo<'a>, env: &'a GitEnv) -> Self {
        Self {
            repo,
            env,
            author: None,
            timeout: DEFAULT_GIT_TIMEOUT,
        }
    }

    /// The command is killed, and fails with [`GitError::Timeout`], after `timeout`.
    pub(crate) fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Commits (and reflog entries) are made as `author`: git sees no identity otherwise.
    pub(crate) fn author(mut self, author: &'a Author) -> Self {
        self.author = Some(author);
        self
    }

    /// The command for `git <args>` run with `home` as its `HOME` and working directory.
    /// Pure: it spawns and creates nothing, so tests can inspect it.
    pub(crate) fn command(&self, args: &[&str], home: &Path) -> Command {
        let mut cmd = Command::new("git");
        cmd.env_clear()
            .current_dir(home)
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| OsString::from(DEFAULT_PATH)),
            )
            .env("HOME", home)
            .envs(FIXED_ENV.iter().copied());
        if let Some(parent) = home.parent() {
            // Git looks for a repository in `home` (empty) and never above it.
            cmd.env("GIT_CEILING_DIRECTORIES", parent);
        }
        if let Some(author) = self.author {
            for (name, value) in [
                ("GIT_AUTHOR_NAME", &author.name),
                ("GIT_AUTHOR_EMAIL", &author.email),
                ("GIT_COMMITTER_NAME", &author.name),
                ("GIT_COMMITTER_EMAIL", &author.email),
            ] {
                cmd.env(name, value);
            }
        }
        let (config, other): (Vec<_>, Vec<_>) =
            self.env.0.iter().partition(|(k, _)| is_config_entry(k));
        if !other.is_empty() {
            let names: Vec<&str> = other.iter().map(|(k, _)| k.as_str()).collect();
            tracing::warn!(
                ?names,
                "dropped environment variables that are not git config entries"
            );
        }
        cmd.envs(config.into_iter().map(|(k, v)| (k, v)));
        for option in HARDENING {
            cmd.arg("-c").arg(option);
        }
        match self.repo {
            Repo::None => {}
            Repo::Bare(git_dir) => {
                cmd.arg(dir_option("--git-dir=", git_dir));
            }
            Repo::Checkout { git_dir, work_tree } => {
                cmd.arg(dir_option("--git-dir=", git_dir))
                    .arg(dir_option("--work-tree=", work_tree));
            }
        }
        cmd.args(args);
        debug_assert!(cmd
            .as_std()
            .get_envs()
            .all(|(name, _)| name.to_str().is_some_and(is_allowed_env)));
        cmd
    }

    /// Runs `git <args>` and returns its standard output.
    pub(crate) async fn run(&self, args: &[&str]) -> Result<String, GitError> {
        self.run_with(args, None).await
    }

    /// [`Git::run`] with `input` on standard input (e.g. a commit message: argv is limited
    /// to 128 KiB per argument and visible to every user in `ps`).
    pub(crate) async fn run_with_input(
        &self,
        args: &[&str],
        input: &[u8],
    ) -> Result<String, GitError> {
        self.run_with(args, Some(input)).await
    }

    /// [`Git::run_with_input`] for output that need not be text (object contents).
    pub(crate) async fn run_bytes_with_input(
        &self,
        args: &[&str],
        input: &[u8],
    ) -> Result<Vec<u8>, GitError> {
        self.run_raw(args, Some(input)).await
    }

    async fn run_with(&self, args: &[&str], input: Option<&[u8]>) -> Result<String, GitError> {
        let out = self.run_raw(args, input).await?;
        String::from_utf8(out).map_err(|e| GitError::Parse(e.to_string()))
    }

    /// Runs a command whose exit status 1 is an answer, not a failure (`merge-base
    /// --is-ancestor`: no; `merge-tree`: conflicts): whether it exited 0, and its output.
    pub(crate) async fn run_yes_no(&self, args: &[&str]) -> Result<(bool, String), GitError> {
        let (out, code) = self.run_status(args, None, &[0, 1]).await?;
        let out = String::from_utf8(out).map_err(|e| GitError::Parse(e.to_string()))?;
        Ok((code == 0, out))
    }

    async fn run_raw(&self, args: &[&str], input: Option<&[u8]>) -> Result<Vec<u8>, GitError> {
        Ok(self.run_status(args, input, &[0]).await?.0)
    }

    /// Runs `git <args>`; an exit status outside `answers` is [`GitError::Failed`].
    async fn run_status(
        &self,
        args: &[&str],
        input: Option<&[u8]>,
        answers: &[i32],
    ) -> Result<(Vec<u8>, i32), GitError> {
        let home = ScratchHome::new()?;
        let mut cmd = self.command(args, &home.0);
        cmd.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
        let spawn_error = |e: std::io::Error| GitError::Spawn(e.to_string());
        let run = async {
            let mut child = cmd.spawn().map_err(spawn_error)?;
            let stdin = child.stdin.take();
            // Written while the output is read: a command that answers as it reads (`cat-file
            // --batch`) would otherwise fill its output pipe and stop reading its input.
            let write = async move {
                if let (Some(input), Some(mut stdin)) = (input, stdin) {
                    stdin.write_all(input).await?;
                }
                Ok::<_, std::io::Error>(())
            };
            let (written, out) = tokio::join!(write, child.wait_with_output());
            Ok::<_, GitError>((written, out.map_err(spawn_error)?))
        };
        let (written, out) = tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| GitError::Timeout(self.timeout, args.join(" ")))??;
        // A command that failed may have stopped reading: its status says more than the
        // broken pipe does.
        if out.status.success() {
            written.map_err(spawn_error)?;
        }
        let answered = out.status.code().filter(|c| answers.contains(c));
        if let Some(code) = answered {
            return Ok((out.stdout, code));
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(GitError::Failed {
            args: args.join(" "),
            status: out.status.to_string(),
            stderr: stderr.trim().chars().take(STDERR_SNIPPET).collect(),
        })
    }
}

/// `--git-dir=<path>` without going through UTF-8 (a path is bytes).
fn dir_option(flag: &str, path: &Path) -> OsString {
    let mut option = OsString::from(flag);
    option.push(path);
    option
}

/// An empty directory made for one git command and removed after it: the command's `HOME`
/// (so rdev's user's `~/.gitconfig`, `~/.config/git/attributes` and `~/.netrc` are not
/// read) and its working directory (so nothing is discovered from where rdev runs).
#[derive(Debug)]
struct ScratchHome(PathBuf);

impl ScratchHome {
    fn new() -> Result<Self, GitError> {
        use std::os::unix::fs::DirBuilderExt;
        let path = std::env::temp_dir().join(format!("rdev-git-{}", uuid::Uuid::new_v4().simple()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(GitError::io("create git's HOME", &path))?;
        Ok(Self(path))
    }
}

impl Drop for ScratchHome {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(cmd: &Command) -> Vec<(String, Option<String>)> {
        cmd.as_std()
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect()
    }

    fn credential_env() -> GitEnv {
        GitEnv(vec![
            ("GIT_CONFIG_COUNT".into(), "1".into()),
            ("GIT_CONFIG_KEY_0".into(), "credential.helper".into()),
            ("GIT_CONFIG_VALUE_0".into(), String::new()),
            // Not a config entry: must never reach git.
            ("LD_PRELOAD".into(), "/tmp/evil.so".into()),
            ("GIT_CONFIG_KEY_x".into(), "core.pager".into()),
        ])
    }

    #[test]
    fn git_environment_is_cleared_to_the_allow_list() {
        let env = credential_env();
        let author = Author::default();
        let home = Path::new("/tmp/rdev-git-test-home");
        let (git_dir, work_tree) = (Path::new("/r/git"), Path::new("/r/tree"));
        let cmd = Git::new(Repo::Checkout { git_dir, work_tree }, &env)
            .author(&author)
            .command(&["status", "--porcelain"], home);
        let vars = env_of(&cmd);
        for (name, value) in &vars {
            assert!(is_allowed_env(name), "{name} is not allowed");
            assert!(value.is_some(), "{name} is removed rather than set");
        }
        let get = |name: &str| {
            vars.iter()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| v.clone())
        };
        assert_eq!(get("GIT_CONFIG_GLOBAL").as_deref(), Some("/dev/null"));
        assert_eq!(get("GIT_CONFIG_NOSYSTEM").as_deref(), Some("1"));
        assert_eq!(get("HOME").as_deref(), Some("/tmp/rdev-git-test-home"));
        assert_eq!(get("GIT_CEILING_DIRECTORIES").as_deref(), Some("/tmp"));
        assert_eq!(get("GIT_AUTHOR_NAME").as_deref(), Some("rdev"));
        assert_eq!(
            get("GIT_CONFIG_KEY_0").as_deref(),
            Some("credential.helper")
        );
        assert!(get("PATH").is_some());
        assert_eq!(get("LD_PRELOAD"), None);
        assert_eq!(get("GIT_CONFIG_KEY_x"), None);
        assert_eq!(cmd.as_std().get_current_dir(), Some(home));

        let args: Vec<String> = cmd
            .as_std()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        for option in HARDENING {
            let at = args.iter().position(|a| a == option).expect(option);
            assert_eq!(args[at - 1], "-c");
        }
        let tail = &args[args.len() - 4..];
        assert_eq!(
            tail,
            [
                "--git-dir=/r/git",
                "--work-tree=/r/tree",
                "status",
                "--porcelain"
            ]
        );

        // Without an author, no identity is passed.
        let plain = Git::new(Repo::None, &env).command(&["ls-remote"], home);
        assert!(env_of(&plain)
            .iter()
            .all(|(k, _)| !k.starts_with("GIT_AUTHOR")));
    }

    #[tokio::test]
    async fn git_runs_with_nothing_of_rdevs_environment() {
        // Git hands an alias its own environment; `!env` prints it. Cargo sets CARGO_* for
        // the test process and scripts/test exports GIT_AUTHOR_NAME: neither may show.
        let env = credential_env();
        let out = Git::new(Repo::None, &env)
            .run(&["-c", "alias.show-env=!env", "show-env"])
            .await
            .unwrap();
        // Git adds these for the alias process itself.
        let git_own = ["GIT_CONFIG_PARAMETERS", "GIT_EXEC_PATH", "GIT_PREFIX"];
        let mut home = None;
        for line in out.lines() {
            let (name, value) = line.split_once('=').unwrap_or((line, ""));
            assert!(
                is_allowed_env(name) || git_own.contains(&name),
                "{name} leaked into git's environment"
            );
            if name == "HOME" {
                home = Some(PathBuf::from(value));
            }
        }
        assert!(out.contains("GIT_CONFIG_GLOBAL=/dev/null\n"), "{out}");
        assert!(out.contains("GIT_CONFIG_NOSYSTEM=1\n"), "{out}");
        assert!(out.contains("core.hooksPath"), "{out}");
        assert!(!out.contains("GIT_AUTHOR"), "{out}");
        // The per-call HOME is gone afterwards.
        let home = home.expect("HOME is set");
        assert!(home.starts_with(std::env::temp_dir()), "{home:?}");
        assert!(!home.exists());
    }

    #[test]
    fn relative_local_remotes_become_absolute_and_urls_stay() {
        for url in [
            "https://git.example/p.git",
            "ssh://git@git.example/p.git",
            "git@git.example:org/p.git",
            "file:///srv/git/p.git",
            "/srv/git/p.git",
        ] {
            assert_eq!(remote_url(url), url);
        }
        let cwd = std::env::current_dir().unwrap();
        for url in ["data/repos/p.git", "p.git", "./a:b/p.git"] {
            let resolved = remote_url(url);
            assert!(Path::new(resolved.as_ref()).is_absolute(), "{resolved}");
            assert!(resolved.starts_with(cwd.to_str().unwrap()), "{resolved}");
        }
    }
}
