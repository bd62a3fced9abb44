//! [`ClaudeCodeConfig`]: how rdev runs the `claude` CLI (binary, permission mode,
//! transport, timeouts, environment). It is embedded in rdev's configuration under
//! `[agents.claude_code]`; every field has a default. This module resolves paths and
//! validates settings; it never starts a process.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use rdev_core::{ErrorCode, SecretString, DEFAULT_AVAILABILITY_TIMEOUT};
use serde::Deserialize;

use crate::{
    sandbox::SandboxConfig,
    settings::{self, secs},
};

/// Environment variable that overrides [`ClaudeCodeConfig::bin`].
pub const BIN_ENV: &str = "RDEV_CLAUDE_BIN";

/// Where `scripts/setup-tools` installs the CLI, relative to the repository root.
pub const SETUP_TOOLS_BIN: &str = ".tools/node_modules/.bin/claude";

/// Settings of the Claude Code adapter.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClaudeCodeConfig {
    /// The `claude` binary. `RDEV_CLAUDE_BIN` overrides it; when neither is set the adapter
    /// looks for `.tools/node_modules/.bin/claude` above the current directory and the
    /// running executable, then falls back to `claude` on `PATH`. With the kubectl
    /// transport it is a path inside the pod (default `claude`).
    pub bin: Option<PathBuf>,
    /// The `--permission-mode` passed to the CLI.
    pub permission_mode: PermissionMode,
    /// Where the CLI runs: a local child process or `kubectl exec` into a pod.
    pub transport: TransportConfig,
    /// How long to wait for the CLI's first output line before failing as unavailable.
    #[serde(with = "secs")]
    pub availability_timeout: Duration,
    /// After `SIGTERM` on cancel or timeout, how long the CLI may take to exit before the
    /// whole process family gets `SIGKILL`.
    #[serde(with = "secs")]
    pub kill_grace: Duration,
    /// Extra environment for every run (API keys, `ANTHROPIC_BASE_URL`, ...). Values are
    /// secrets: never logged and redacted from events.
    pub env: BTreeMap<String, SecretString>,
    /// Variables passed through from rdev's own environment to the local CLI (or to
    /// `kubectl` itself). A trailing `*` matches a prefix. Everything else is withheld, so
    /// rdev's own secrets (`RDEV_MASTER_KEY`, database URLs) never reach an agent.
    pub inherit_env: Vec<String>,
    /// Give every working directory its own `CLAUDE_CONFIG_DIR` under
    /// [`Self::config_root`], so concurrent runs never share the CLI's state files while
    /// `--resume` in the same directory still finds its session. Local transport only.
    pub isolate_config: bool,
    /// Root of the per-directory config dirs; default `$XDG_STATE_HOME/rdev/claude`
    /// (or `~/.local/state/rdev/claude`).
    pub config_root: Option<PathBuf>,
    /// Extra CLI arguments appended after rdev's own (e.g. `--fallback-model`).
    pub extra_args: Vec<String>,
    /// The sandbox local runs start in; set from `[agents]` (`sandbox`, `bwrap_bin`,
    /// `sandbox_read_only`), not from this table. Bubblewrap by default.
    #[serde(skip)]
    pub sandbox: SandboxConfig,
}

impl Default for ClaudeCodeConfig {
    fn default() -> Self {
        Self {
            bin: None,
            permission_mode: PermissionMode::default(),
            transport: TransportConfig::default(),
            availability_timeout: DEFAULT_AVAILABILITY_TIMEOUT,
            kill_grace: Duration::from_secs(3),
            env: BTreeMap::new(),
            inherit_env: crate::env::DEFAULT_INHERIT_ENV
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            isolate_config: true,
            config_root: None,
            extra_args: Vec::new(),
            sandbox: SandboxConfig::default(),
        }
    }
}

/// Claude Code's `--permission-mode` values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PermissionMode {
    /// Ask before every tool use; a `-p` run then cannot edit anything.
    Default,
    /// Accept file edits, ask for commands.
    AcceptEdits,
    /// Never ask: builds run unattended in a checkout made for them, so the agent may edit
    /// files and run commands there. The default; it implies `IS_SANDBOX=1` (see docs).
    #[default]
    BypassPermissions,
    /// Deny whatever would need asking.
    DontAsk,
    /// Plan only, no changes.
    Plan,
}

impl PermissionMode {
    /// The value the CLI expects.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::AcceptEdits => "acceptEdits",
            Self::BypassPermissions => "bypassPermissions",
            Self::DontAsk => "dontAsk",
            Self::Plan => "plan",
        }
    }
}

/// Where the CLI runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TransportConfig {
    /// A child process of rdev.
    #[default]
    Local,
    /// `kubectl exec -i <pod> [-n ns] [-c container] -- ...`.
    Kubectl(KubectlConfig),
}

/// Settings of the kubectl transport. There is deliberately no default `kubectl_bin`: the
/// binary is always named by configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubectlConfig {
    /// The kubectl binary to run.
    pub kubectl_bin: PathBuf,
    /// The pod to exec into.
    pub pod: String,
    /// Its namespace (`-n`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Its container (`-c`).
    #[serde(default)]
    pub container: Option<String>,
    /// rdev's model gateway as the pod reaches it (`http://host:port`: rdev's
    /// `gateway.listen`, exposed to the cluster). Set, the pod gets the attempt's token and
    /// this URL (and the egress proxy behind it) instead of any model key; unset, it keeps
    /// its own model setup and rdev's configured `env` (docs/security.md).
    #[serde(default)]
    pub gateway_url: Option<String>,
}

/// Invalid Claude Code settings or request environment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// An environment variable name that is not `[A-Za-z_][A-Za-z0-9_]*`.
    #[error("invalid environment variable name {0:?}")]
    InvalidEnvName(String),
    /// A value that cannot cross the kubectl transport (it contains a newline or NUL).
    #[error("environment variable {0} has a newline or NUL in its value")]
    InvalidEnvValue(String),
    /// A kubectl transport without a pod.
    #[error("kubectl transport needs a pod name")]
    MissingPod,
    /// A kubectl transport's `gateway_url` that is not `http://host[:port]`.
    #[error("kubectl transport gateway_url {0:?} is not http://host[:port] (no path, no user)")]
    InvalidGatewayUrl(String),
}

impl ErrorCode for ConfigError {
    fn code(&self) -> &'static str {
        match self {
            Self::InvalidEnvName(_) => "invalid_env_name",
            Self::InvalidEnvValue(_) => "invalid_env_value",
            Self::MissingPod => "kubectl_pod_missing",
            Self::InvalidGatewayUrl(_) => "kubectl_gateway_url_invalid",
        }
    }
}

/// Whether `u` is a plain `http://host[:port]` (a trailing `/` allowed): the gateway's
/// listener speaks plain HTTP, and the token goes into the proxy URL's user part.
fn is_gateway_url(u: &str) -> bool {
    url::Url::parse(u).is_ok_and(|p| {
        p.scheme() == "http"
            && p.host_str().is_some_and(|h| !h.is_empty())
            && p.username().is_empty()
            && p.password().is_none()
            && p.path() == "/"
            && p.query().is_none()
            && p.fragment().is_none()
    })
}

impl ClaudeCodeConfig {
    /// The model gateway's base URL as this agent's runs see it: a local run's through its
    /// sandbox link; a kubectl pod's at `gateway_url`, without which the pod cannot reach
    /// rdev and keeps its own setup. `None`: runs do not go through the gateway.
    pub fn gateway_base_url(&self) -> Option<String> {
        match &self.transport {
            TransportConfig::Local => {
                Some(self.sandbox.gateway.as_ref()?.base_url(self.sandbox.mode))
            }
            TransportConfig::Kubectl(k) => {
                Some(k.gateway_url.as_deref()?.trim_end_matches('/').to_owned())
            }
        }
    }

    /// Checks settings that would otherwise fail at the first run.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for name in self.env.keys() {
            check_env_name(name)?;
        }
        if let TransportConfig::Kubectl(k) = &self.transport {
            if k.pod.trim().is_empty() {
                return Err(ConfigError::MissingPod);
            }
            if let Some(u) = &k.gateway_url {
                if !is_gateway_url(u) {
                    return Err(ConfigError::InvalidGatewayUrl(u.clone()));
                }
            }
        }
        Ok(())
    }

    /// The binary to run: [`Self::bin`] (which `RDEV_CLAUDE_BIN` sets, read by rdev's
    /// configuration), else (local transport) the
    /// one `scripts/setup-tools` installed, else `claude` from `PATH`.
    pub fn resolve_bin(&self) -> PathBuf {
        if let Some(bin) = &self.bin {
            return bin.clone();
        }
        if self.transport == TransportConfig::Local {
            if let Some(found) = settings::discover_setup_tools_bin(SETUP_TOOLS_BIN) {
                return found;
            }
        }
        PathBuf::from("claude")
    }

    /// The root of the per-directory `CLAUDE_CONFIG_DIR`s.
    pub fn resolve_config_root(&self) -> PathBuf {
        match &self.config_root {
            Some(root) => root.clone(),
            None => settings::state_dir("claude"),
        }
    }

    /// The `CLAUDE_CONFIG_DIR` a run in `workdir` gets: one per working directory under
    /// [`Self::resolve_config_root`] when [`Self::isolate_config`] is on and the transport
    /// is local; `None` otherwise (the CLI then uses its own default). The adapter creates
    /// it and never removes it (see `CodeAgent::workdir_state`).
    pub fn config_dir(&self, workdir: &Path) -> Option<PathBuf> {
        (self.isolate_config && self.transport == TransportConfig::Local)
            .then(|| config_dir_for(&self.resolve_config_root(), workdir))
    }
}

/// The longest config dir name: deep paths keep only their last characters.
const MAX_KEY_CHARS: usize = 120;

/// A path with every character outside `[A-Za-z0-9]` replaced by `-`.
fn path_key(path: &Path) -> String {
    path.to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// The config dir of one working directory below `root`: the absolute path with every
/// character outside `[A-Za-z0-9]` replaced by `-` (the scheme the CLI uses for its own
/// project dirs), keeping the last 120 characters so deep paths stay a valid file name.
pub fn config_dir_for(root: &Path, workdir: &Path) -> PathBuf {
    let abs = std::fs::canonicalize(workdir).unwrap_or_else(|_| workdir.to_path_buf());
    let key = path_key(&abs);
    let skip = key.chars().count().saturating_sub(MAX_KEY_CHARS);
    root.join(key.chars().skip(skip).collect::<String>())
}

/// Config dirs below `root` of working directories directly under `parent` that no longer
/// exist. A dir counts only when its name is exactly what [`config_dir_for`] gives for
/// `parent/<rest>`, so names shortened to their last 120 characters (which no longer say
/// which directory they came from) and dirs of other parents are never taken.
pub fn orphaned_config_dirs(root: &Path, parent: &Path) -> Vec<PathBuf> {
    let Ok(parent) = std::fs::canonicalize(parent) else {
        return Vec::new();
    };
    let prefix = format!("{}-", path_key(&parent));
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let (Ok(kind), Some(name)) = (
            entry.file_type(),
            entry.file_name().to_str().map(str::to_owned),
        ) else {
            continue;
        };
        let Some(rest) = name.strip_prefix(&prefix).filter(|r| !r.is_empty()) else {
            continue;
        };
        let workdir = parent.join(rest);
        if kind.is_dir()
            && config_dir_for(root, &workdir) == entry.path()
            && std::fs::symlink_metadata(&workdir).is_err()
        {
            out.push(entry.path());
        }
    }
    out.sort();
    out
}

/// Whether `name` is a portable environment variable name.
pub fn check_env_name(name: &str) -> Result<(), ConfigError> {
    if crate::env::is_valid_name(name) {
        Ok(())
    } else {
        Err(ConfigError::InvalidEnvName(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deserializes_a_kubectl_transport_and_defaults_the_rest() {
        let cfg: ClaudeCodeConfig = serde_json::from_value(serde_json::json!({
            "permission_mode": "acceptEdits",
            "availability_timeout": 2.5,
            "transport": {"kind": "kubectl", "kubectl_bin": "/x/kubectl", "pod": "p1", "namespace": "ns"},
            "env": {"ANTHROPIC_API_KEY": "k"}
        }))
        .unwrap();
        assert_eq!(cfg.permission_mode, PermissionMode::AcceptEdits);
        assert_eq!(cfg.availability_timeout, Duration::from_millis(2500));
        assert_eq!(cfg.kill_grace, Duration::from_secs(3));
        assert!(cfg.isolate_config);
        assert_eq!(
            cfg.transport,
            TransportConfig::Kubectl(KubectlConfig {
                kubectl_bin: "/x/kubectl".into(),
                pod: "p1".into(),
                namespace: Some("ns".into()),
                container: None,
                gateway_url: None,
            })
        );
        assert!(!format!("{cfg:?}").contains("\"k\""));
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn rejects_bad_env_names_and_empty_pods() {
        let mut cfg = ClaudeCodeConfig::default();
        cfg.env.insert("BAD-NAME".into(), SecretString::new("v"));
        assert_eq!(cfg.validate().unwrap_err().code(), "invalid_env_name");
        let cfg = ClaudeCodeConfig {
            transport: TransportConfig::Kubectl(KubectlConfig {
                kubectl_bin: "k".into(),
                pod: " ".into(),
                namespace: None,
                container: None,
                gateway_url: None,
            }),
            ..ClaudeCodeConfig::default()
        };
        assert_eq!(cfg.validate(), Err(ConfigError::MissingPod));
    }

    #[test]
    fn a_kubectl_gateway_url_is_plain_http_to_a_host_and_port() {
        for ok in [
            "http://rdev-gw.rdev.svc:17700",
            "http://10.0.0.5:80/",
            "http://gw",
        ] {
            assert!(is_gateway_url(ok), "{ok}");
        }
        for bad in [
            "https://gw:17700",
            "http://gw:17700/v1",
            "http://rdev:token@gw:17700",
            "http://gw:17700/?x=1",
            "gw:17700",
            "",
        ] {
            assert!(!is_gateway_url(bad), "{bad}");
        }
    }

    #[test]
    fn only_config_dirs_of_vanished_workdirs_under_the_parent_are_orphans() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("state");
        let work = tmp.path().join("data/git/work");
        std::fs::create_dir_all(work.join("live")).unwrap();
        let cfg = ClaudeCodeConfig {
            config_root: Some(root.clone()),
            ..ClaudeCodeConfig::default()
        };
        let live = cfg.config_dir(&work.join("live")).unwrap();
        let gone = cfg.config_dir(&work.join("site-0193-gone")).unwrap();
        let elsewhere = cfg.config_dir(&tmp.path().join("elsewhere")).unwrap();
        let deep = cfg.config_dir(&work.join("x".repeat(200))).unwrap();
        for dir in [&live, &gone, &elsewhere, &deep] {
            std::fs::create_dir_all(dir).unwrap();
        }
        assert_eq!(live.parent(), Some(root.as_path()));
        assert_eq!(orphaned_config_dirs(&root, &work), [gone]);
        assert_eq!(
            orphaned_config_dirs(&tmp.path().join("missing"), &work),
            [] as [PathBuf; 0]
        );
        let kubectl = ClaudeCodeConfig {
            transport: TransportConfig::Kubectl(KubectlConfig {
                kubectl_bin: "k".into(),
                pod: "p".into(),
                namespace: None,
                container: None,
                gateway_url: None,
            }),
            ..cfg
        };
        assert_eq!(kubectl.config_dir(&work), None, "no local state in a pod");
    }

    #[test]
    fn config_dirs_are_distinct_per_workdir_and_bounded() {
        let root = Path::new("/r");
        let a = config_dir_for(root, Path::new("/nonexistent/a"));
        let b = config_dir_for(root, Path::new("/nonexistent/b"));
        assert_ne!(a, b);
        assert_eq!(a, Path::new("/r/-nonexistent-a"));
        let deep = "/d".repeat(200);
        let c = config_dir_for(root, Path::new(&deep));
        assert_eq!(c.file_name().unwrap().len(), 120);
    }
}
