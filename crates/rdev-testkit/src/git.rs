//! Git fixtures for tests: run the real `git` and read a bare remote's branch. Blocking on
//! purpose (tests call them between steps); they never touch the user's git config beyond
//! what the environment already gives git.

use std::process::Command;

/// Runs `git ARGS` and returns its trimmed stdout; panics with git's stderr if it fails.
pub fn git(args: &[&str]) -> String {
    let out = Command::new("git").args(args).output().expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The commit `main` points at in the bare repository `remote`, or `None` before the first
/// push.
pub fn remote_head(remote: &str) -> Option<String> {
    let out = Command::new("git")
        .args([
            "--git-dir",
            remote,
            "rev-parse",
            "--verify",
            "--quiet",
            "refs/heads/main",
        ])
        .output()
        .expect("git runs");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
