//! Where the test suites find the repository root, the agent CLIs that
//! `scripts/setup-tools` installs into `<root>/.tools`, and Schemathesis, which
//! `scripts/setup-schemathesis` installs into `<root>/.tools/schemathesis`. It must not
//! install anything itself: a missing CLI is a loud panic telling the developer what to run.

use std::path::PathBuf;

/// The repository root (two levels above this crate's manifest).
pub fn workspace_root() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

fn agent_bin(env_var: &str, name: &str) -> PathBuf {
    let path = match std::env::var_os(env_var) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => workspace_root().join(".tools/node_modules/.bin").join(name),
    };
    assert!(
        path.is_file(),
        "the {name} CLI is missing at {} (set {env_var} or run scripts/setup-tools)",
        path.display()
    );
    path
}

/// The `claude` CLI: `$RDEV_CLAUDE_BIN` or `<root>/.tools/node_modules/.bin/claude`.
/// Panics with "run scripts/setup-tools" when it is absent.
pub fn claude_bin() -> PathBuf {
    agent_bin("RDEV_CLAUDE_BIN", "claude")
}

/// The `opencode` CLI: `$RDEV_OPENCODE_BIN` or `<root>/.tools/node_modules/.bin/opencode`.
/// Panics with "run scripts/setup-tools" when it is absent.
pub fn opencode_bin() -> PathBuf {
    agent_bin("RDEV_OPENCODE_BIN", "opencode")
}

/// Schemathesis' `st` CLI in the virtual environment at `<root>/.tools/schemathesis`.
/// Panics with "run scripts/setup-schemathesis" when it is absent: a test that needs it
/// fails rather than skipping silently.
pub fn schemathesis_bin() -> PathBuf {
    let path = workspace_root().join(".tools/schemathesis/bin/st");
    assert!(
        path.is_file(),
        "Schemathesis is missing at {} (run scripts/setup-schemathesis; scripts/setup-tools \
         and scripts/test run it too)",
        path.display()
    );
    path
}
