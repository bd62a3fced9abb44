//! The programs a build runs: git, node (for `scripts/setup-tools`), each enabled agent's
//! CLI against the version `scripts/setup-tools` pins, and the bubblewrap sandbox. The pins
//! are read from that script at compile time, so there is one place to change them.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use rdev_agents::sandbox::{find_program, Sandbox, SandboxMode};
use rdev_core::AgentProvider;
use tokio::process::Command;

use super::{
    readiness::{agent_binary, uses_local_sandbox, SANDBOX_FIX},
    Check,
};
use crate::config::Config;

/// The script that installs the agent CLIs; its `*_VERSION=` lines are the pins.
const SETUP_TOOLS: &str = include_str!("../../../../scripts/setup-tools");

/// The oldest git rdev works with: credentials reach git through `GIT_CONFIG_COUNT`
/// (2.31), and a push refused as not fast-forward is replayed with `git merge-tree
/// --write-tree` and `--attr-source` (2.40), which never reads the agent's attributes.
const MIN_GIT: (u64, u64) = (2, 40);
/// The oldest Node.js the agent CLIs' installer supports.
const MIN_NODE: u64 = 18;
/// How long a `--version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(30);

/// The value of `NAME="value"` in `scripts/setup-tools`.
pub fn pinned(name: &str) -> Option<&'static str> {
    SETUP_TOOLS.lines().find_map(|line| {
        let rest = line.trim().strip_prefix(name)?.strip_prefix('=')?;
        Some(rest.trim_matches('"'))
    })
}

/// The npm package and pinned version of provider `id`'s CLI.
fn pin(id: &str) -> Option<(&'static str, &'static str)> {
    let (pkg, version) = match id {
        AgentProvider::CLAUDE_CODE => ("CLAUDE_PKG", "CLAUDE_VERSION"),
        AgentProvider::OPENCODE => ("OPENCODE_PKG", "OPENCODE_VERSION"),
        _ => return None,
    };
    Some((pinned(pkg)?, pinned(version)?))
}

/// The first `digits.digits[.digits]` in `text`.
fn version_in(text: &str) -> Option<String> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find(|t| t.contains('.') && t.starts_with(|c: char| c.is_ascii_digit()))
        .map(|t| t.trim_end_matches('.').to_owned())
}

/// `(major, minor)` of a version string.
fn major_minor(version: &str) -> (u64, u64) {
    let mut parts = version.split('.').map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// The first line `program --version` prints, or why it could not run.
async fn version_output(program: &Path, env: &[(&str, PathBuf)]) -> Result<String, String> {
    let mut cmd = Command::new(program);
    cmd.arg("--version")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(VERSION_TIMEOUT, cmd.output())
        .await
        .map_err(|_| {
            format!(
                "`{} --version` did not answer within {VERSION_TIMEOUT:?}",
                program.display()
            )
        })?
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "`{} --version` failed ({}): {}",
            program.display(),
            out.status,
            stderr.trim().lines().next().unwrap_or_default()
        ));
    }
    Ok(stdout.lines().next().unwrap_or_default().trim().to_owned())
}

/// git on `PATH`, new enough.
pub(super) async fn git() -> Check {
    const NAME: &str = "git";
    let fix = format!(
        "install git {}.{} or newer (`apt-get install git`) on the PATH rdev runs with",
        MIN_GIT.0, MIN_GIT.1
    );
    let Some(bin) = find_program(Path::new("git")) else {
        return Check::error(NAME, "git was not found on PATH", fix);
    };
    match version_output(&bin, &[]).await {
        Ok(line) => match version_in(&line) {
            Some(v) if major_minor(&v) >= MIN_GIT => {
                Check::ok(NAME, format!("{line} ({})", bin.display()))
            }
            _ => Check::error(
                NAME,
                format!(
                    "{line} at {} is older than {}.{}",
                    bin.display(),
                    MIN_GIT.0,
                    MIN_GIT.1
                ),
                fix,
            ),
        },
        Err(e) => Check::error(NAME, e, fix),
    }
}

/// node on `PATH`: `scripts/setup-tools` needs it (with npm) to install the agent CLIs;
/// the installed CLIs do not, so its absence is only a warning.
pub(super) async fn node() -> Check {
    const NAME: &str = "node";
    let fix = format!(
        "install Node.js {MIN_NODE} or newer with npm; scripts/setup-tools uses it to install \
         and update the agent CLIs"
    );
    let Some(bin) = find_program(Path::new("node")) else {
        return Check::warning(NAME, "node was not found on PATH", fix);
    };
    match version_output(&bin, &[]).await {
        Ok(line) => match version_in(&line) {
            Some(v) if major_minor(&v).0 >= MIN_NODE => {
                Check::ok(NAME, format!("{line} ({})", bin.display()))
            }
            _ => Check::warning(
                NAME,
                format!("{line} at {} is older than {MIN_NODE}", bin.display()),
                fix,
            ),
        },
        Err(e) => Check::warning(NAME, e, fix),
    }
}

/// Provider `id`'s CLI: present, runs, and at the pinned version (or, for the kubectl
/// transport, kubectl present; for an external OpenCode server, nothing to run).
pub(super) async fn agent_cli(config: &Config, id: &str) -> Check {
    let name = format!("{id} CLI");
    let invalid = match id {
        AgentProvider::CLAUDE_CODE => config
            .agents
            .claude_code
            .validate()
            .err()
            .map(|e| e.to_string()),
        AgentProvider::OPENCODE => config
            .agents
            .opencode
            .validate()
            .err()
            .map(|e| e.to_string()),
        _ => None,
    };
    if let Some(e) = invalid {
        return Check::error(
            name,
            format!("invalid [agents] settings: {e}"),
            "fix the setting named",
        );
    }
    let Some(bin) = agent_binary(config, id) else {
        return match config.agents.opencode.clone().url {
            Some(url) if id == AgentProvider::OPENCODE => Check::ok(
                name,
                format!(
                    "uses the OpenCode server at {url} (agents.opencode.url); rdev starts no CLI"
                ),
            ),
            _ => Check::ok(name, "no CLI to check for this provider"),
        };
    };
    let fix = format!("run scripts/setup-tools, or set {}", bin.setting);
    let Some(path) = find_program(&bin.path) else {
        return Check::error(
            name,
            format!(
                "the {} binary was not found at {}",
                bin.program,
                bin.path.display()
            ),
            fix,
        );
    };
    if bin.program == "kubectl" {
        return Check::ok(
            name,
            format!(
                "kubectl at {}; the claude CLI runs in the pod and is not checked from here",
                path.display()
            ),
        );
    }
    // opencode may write state below its XDG directories; keep that out of HOME.
    let scratch = (bin.program == "opencode")
        .then(|| std::env::temp_dir().join(format!("rdev-doctor-{}", std::process::id())));
    let env: Vec<(&str, PathBuf)> = scratch
        .iter()
        .flat_map(|dir| {
            [
                "XDG_DATA_HOME",
                "XDG_CONFIG_HOME",
                "XDG_CACHE_HOME",
                "XDG_STATE_HOME",
            ]
            .map(|k| (k, dir.clone()))
        })
        .collect();
    let output = version_output(&path, &env).await;
    if let Some(dir) = &scratch {
        let _ = std::fs::remove_dir_all(dir);
    }
    let line = match output {
        Ok(line) => line,
        Err(e) => return Check::error(name, e, fix),
    };
    let found = version_in(&line).unwrap_or_else(|| line.clone());
    match pin(id) {
        Some((_, wanted)) if found == wanted => Check::ok(
            name,
            format!(
                "{} {found} at {} (the pinned version)",
                bin.program,
                path.display()
            ),
        ),
        Some((pkg, wanted)) => Check::warning(
            name,
            format!(
                "{} {found} at {}; rdev is tested with {wanted} (scripts/setup-tools)",
                bin.program,
                path.display()
            ),
            format!("run scripts/setup-tools, or install {pkg}@{wanted}"),
        ),
        None => Check::ok(
            name,
            format!("{} {found} at {}", bin.program, path.display()),
        ),
    }
}

/// The bubblewrap sandbox starts, when an enabled provider runs a local agent.
pub(super) async fn sandbox(config: &Config) -> Check {
    const NAME: &str = "sandbox";
    if config.agents.sandbox == SandboxMode::None {
        return Check::warning(
            NAME,
            "agents.sandbox = \"none\": agents run unsandboxed and can read everything rdev \
             can (data directory, master key, environment)",
            "remove agents.sandbox (default bubblewrap) unless a VM or container per rdev is \
             the boundary (docs/security.md)",
        );
    }
    if !config
        .agents
        .enabled
        .iter()
        .any(|id| uses_local_sandbox(config, id))
    {
        return Check::ok(
            NAME,
            "no enabled provider runs a local agent (kubectl pod or external server)",
        );
    }
    match Sandbox::new(config.agents.sandbox_config()).check().await {
        Ok(bin) => Check::ok(
            NAME,
            format!("bubblewrap at {} starts a sandbox", bin.display()),
        ),
        Err(e) => Check::error(NAME, e.to_string(), SANDBOX_FIX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pins_come_from_setup_tools() {
        for id in [AgentProvider::CLAUDE_CODE, AgentProvider::OPENCODE] {
            let (pkg, version) = pin(id).unwrap_or_else(|| panic!("{id} is pinned"));
            assert!(!pkg.is_empty());
            assert_eq!(
                version_in(version).as_deref(),
                Some(version),
                "{id}: {version}"
            );
        }
        assert_eq!(
            pin(AgentProvider::CLAUDE_CODE).unwrap().0,
            "@anthropic-ai/claude-code"
        );
        assert_eq!(pinned("NO_SUCH_PIN"), None);
    }

    #[test]
    fn versions_are_read_from_version_lines() {
        assert_eq!(
            version_in("2.1.197 (Claude Code)").as_deref(),
            Some("2.1.197")
        );
        assert_eq!(version_in("git version 2.47.3").as_deref(), Some("2.47.3"));
        assert_eq!(version_in("v20.20.2").as_deref(), Some("20.20.2"));
        assert_eq!(version_in("no digits"), None);
        assert!(major_minor("2.40.0") >= MIN_GIT);
        assert!(major_minor("2.39.5") < MIN_GIT);
    }
}
