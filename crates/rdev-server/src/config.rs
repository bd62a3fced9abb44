//! rdev's configuration: defaults, then `rdev.toml` (or the file named by `--config` /
//! `RDEV_CONFIG`), then `RDEV_*` environment variables, then command-line flags. It only
//! describes settings; it opens no connection and starts nothing. Unknown keys are errors
//! and paths are made absolute at load (`keys`, `paths`).

mod aliases;
mod gateway;
mod keys;
mod paths;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use figment::{
    providers::{Env, Format, Toml},
    Figment,
};
use rdev_agents::sandbox::{SandboxConfig, SandboxMode};
use rdev_core::{RequestLimits, SecretString};
use serde::Deserialize;

pub use self::gateway::{
    DerivedKey, DerivedUpstream, GatewayConfig, GatewaySettings, Upstream, UpstreamAuth,
    UpstreamConfig, DERIVED_SOURCES,
};

/// Where logs go and how they look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Pretty when stderr is a terminal, JSON otherwise.
    #[default]
    Auto,
    Json,
    Pretty,
}

/// Everything `rdev serve` needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// `sqlite:PATH` (default `sqlite:rdev.db`) or `postgres://...`.
    pub database_url: String,
    /// Where rdev keeps its own files (mirrors, workspaces, the master key file).
    pub data_dir: PathBuf,
    /// Log output format.
    pub log_format: LogFormat,
    /// Admin bearer token for the API (`RDEV_API_TOKEN`); named tokens come from `rdev
    /// token create`. With neither, the API is open, which `serve` refuses beyond loopback
    /// unless `allow_unauthenticated`. Empty is a configuration error.
    #[serde(deserialize_with = "non_empty_token")]
    pub api_token: Option<SecretString>,
    /// The credential store's master key, base64 of 32 bytes (`RDEV_MASTER_KEY`). Unset:
    /// the key file. Best given in the environment, never in a file others can read.
    pub master_key: Option<SecretString>,
    /// The master key file (`RDEV_MASTER_KEY_FILE`, default `<data_dir>/master.key`),
    /// created with mode 0600 when missing.
    pub master_key_file: Option<PathBuf>,
    /// Serve an API without any credential on a non-loopback address (off: refused).
    pub allow_unauthenticated: bool,
    /// Allow callback URLs in private/loopback ranges (off by default: SSRF).
    pub allow_private_callbacks: bool,
    /// How long running work may take to finish after a shutdown signal, in seconds.
    pub shutdown_grace_secs: u64,
    /// Largest agent timeout a build may ask for, in seconds.
    pub max_timeout_secs: u64,
    /// Largest prompt accepted, in bytes.
    pub max_prompt_bytes: usize,
    /// Extra template folders (each holds template folders) besides the built-ins.
    pub template_dirs: Vec<PathBuf>,
    /// Where new bare repositories are created for projects given no `repo_url`
    /// (default `<data_dir>/repos`).
    pub git_root: Option<PathBuf>,
    /// Spare checkouts kept ready across all projects (0: none; every task then fetches
    /// and clones on its critical path). See docs/decisions.md, "Git workspaces".
    pub git_spare_checkouts: usize,
    /// How long one git command (fetch, clone, push, ...) may run before it is killed and
    /// fails with `git_timeout`, in seconds (default 600, at least 1).
    pub git_timeout_secs: u64,
    /// Author and committer of rdev's commits.
    pub commit_author_name: String,
    pub commit_author_email: String,
    /// Tasks this node runs at once (0: API only).
    pub worker_concurrency: u32,
    /// How long a worker's claim on a task lasts without a heartbeat, in seconds.
    pub worker_lease_secs: u64,
    /// Hours a failed task's checkout (worktree, git dir, the agent's config dir) stays on
    /// disk for debugging before the housekeeping sweep removes it (0: removed at once).
    pub keep_failed_workspaces_hours: u64,
    /// Days finished tasks (with their events, attempts and callback rows) and secret audit
    /// rows are kept before they are pruned (0: kept forever).
    pub retention_days: u64,
    /// Code agents, in order of preference (the first is the default).
    pub agents: AgentsConfig,
    /// Woodpecker CI, followed after a push when a project names its repository id.
    pub woodpecker: Option<WoodpeckerConfig>,
    /// The model gateway: upstreams, prices, budget caps, egress (docs/gateway.md).
    pub gateway: GatewayConfig,
}

/// `[agents]`: which providers run and how.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentsConfig {
    /// Provider ids to register, the default first.
    pub enabled: Vec<String>,
    /// `[agents.claude_code]`
    pub claude_code: rdev_agents::claude_code::ClaudeCodeConfig,
    /// `[agents.opencode]`
    pub opencode: rdev_agents::opencode::OpenCodeConfig,
    /// `"bubblewrap"` (default): every locally run agent process starts in a bubblewrap
    /// sandbox, and a run fails with `sandbox_unavailable` when it cannot; `"none"` runs
    /// agents unsandboxed (rdev warns at start). See docs/security.md.
    pub sandbox: SandboxMode,
    /// The `bwrap` binary (default `bwrap` on `PATH`).
    pub bwrap_bin: Option<PathBuf>,
    /// Extra host paths every agent sandbox mounts read-only (e.g. a CLI installed outside
    /// `/usr` and outside an npm `node_modules` tree).
    pub sandbox_read_only: Vec<PathBuf>,
    /// The running model gateway; set by rdev when it starts one, never from a file.
    #[serde(skip)]
    pub gateway: Option<rdev_agents::sandbox::GatewayLink>,
}

impl AgentsConfig {
    /// The sandbox settings every local agent shares.
    pub fn sandbox_config(&self) -> SandboxConfig {
        SandboxConfig {
            mode: self.sandbox,
            bwrap_bin: self.bwrap_bin.clone(),
            read_only: self.sandbox_read_only.clone(),
            gateway: self.gateway.clone(),
        }
    }

    /// How provider `id` is isolated: `kubernetes_pod` (kubectl transport), `external`
    /// (an OpenCode server rdev does not supervise), else the sandbox mode.
    pub fn isolation(&self, id: &str) -> &'static str {
        use rdev_agents::claude_code::TransportConfig;
        match id {
            rdev_core::AgentProvider::CLAUDE_CODE
                if matches!(self.claude_code.transport, TransportConfig::Kubectl(_)) =>
            {
                "kubernetes_pod"
            }
            rdev_core::AgentProvider::OPENCODE if self.opencode.url.is_some() => "external",
            _ => self.sandbox.as_str(),
        }
    }
}

impl Default for AgentsConfig {
    fn default() -> Self {
        Self {
            enabled: vec!["claude-code".into(), "opencode".into()],
            claude_code: Default::default(),
            opencode: Default::default(),
            sandbox: SandboxMode::default(),
            bwrap_bin: None,
            sandbox_read_only: Vec::new(),
            gateway: None,
        }
    }
}

/// `[woodpecker]`: the CI server rdev follows.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WoodpeckerConfig {
    /// Base URL, e.g. `https://ci.example.com`.
    pub url: String,
    /// API token (`RDEV_WOODPECKER__TOKEN`).
    pub token: SecretString,
    /// How long to wait for a pushed commit's pipeline to appear.
    #[serde(default = "default_appear_secs")]
    pub appear_timeout_secs: u64,
    /// How long a pipeline may run.
    #[serde(default = "default_pipeline_secs")]
    pub pipeline_timeout_secs: u64,
    /// Poll interval in milliseconds.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
}

fn default_appear_secs() -> u64 {
    120
}
fn default_pipeline_secs() -> u64 {
    3600
}
fn default_poll_ms() -> u64 {
    2000
}

impl Config {
    /// The callback dispatcher's settings.
    pub fn dispatch(&self) -> crate::callbacks::dispatcher::DispatchConfig {
        crate::callbacks::dispatcher::DispatchConfig {
            allow_private: self.allow_private_callbacks,
            ..Default::default()
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: "sqlite:rdev.db".to_owned(),
            data_dir: PathBuf::from("data"),
            log_format: LogFormat::Auto,
            api_token: None,
            master_key: None,
            master_key_file: None,
            allow_unauthenticated: false,
            allow_private_callbacks: false,
            shutdown_grace_secs: 30,
            max_timeout_secs: RequestLimits::DEFAULT_MAX_TIMEOUT.as_secs(),
            max_prompt_bytes: RequestLimits::DEFAULT_MAX_PROMPT_BYTES,
            template_dirs: Vec::new(),
            git_root: None,
            git_spare_checkouts: crate::git::DEFAULT_SPARE_CHECKOUTS,
            git_timeout_secs: crate::git::DEFAULT_GIT_TIMEOUT.as_secs(),
            commit_author_name: "rdev".to_owned(),
            commit_author_email: "rdev@localhost".to_owned(),
            worker_concurrency: 2,
            worker_lease_secs: 60,
            keep_failed_workspaces_hours: 24,
            retention_days: 30,
            agents: AgentsConfig::default(),
            woodpecker: None,
            gateway: GatewayConfig::default(),
        }
    }
}

/// An `api_token` that is empty or only whitespace is an error, not "no token": someone
/// meant to set one (`RDEV_API_TOKEN=""` from an unset shell variable, say).
fn non_empty_token<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<SecretString>, D::Error> {
    let token = SecretString::deserialize(d)?;
    if token.expose().trim().is_empty() {
        return Err(serde::de::Error::custom(
            "api_token is empty; set a token or remove the setting",
        ));
    }
    Ok(Some(token))
}

/// Configuration could not be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl rdev_core::ErrorCode for ConfigError {
    fn code(&self) -> &'static str {
        "invalid_config"
    }
}

impl Config {
    /// The one reader of rdev's settings (nothing else reads one from the environment).
    /// Loads defaults, then the TOML file (if it exists), then `RDEV_*` variables and the
    /// short aliases of `aliases` (`RDEV_CLAUDE_BIN`, ...), and
    /// makes every path absolute against the current directory ([`Config::resolve_paths`]).
    /// Nested keys use a double underscore: `RDEV_AGENTS__OPENCODE__URL`. Keys are
    /// lower-cased except a variable name below an `env` table, which keeps its case
    /// (`RDEV_AGENTS__CLAUDE_CODE__ENV__ANTHROPIC_API_KEY`). An unknown key in the file is an
    /// error; an `RDEV_*` variable whose first part is no key is not configuration and is
    /// skipped (see `keys`).
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let explicit = file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("RDEV_CONFIG").map(PathBuf::from));
        if let Some(path) = &explicit {
            if !path.exists() {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
        }
        let path = explicit.unwrap_or_else(|| PathBuf::from("rdev.toml"));
        let env = |k: &str| std::env::var(k).ok();
        let mut config: Self = Figment::new()
            .merge(Toml::file(&path))
            .merge(
                Env::prefixed("RDEV_")
                    .filter(|k| keys::is_config_env(k.as_str()))
                    .split("__")
                    .map(|k| keys::env_key_path(k.as_str()).into())
                    // After the last map: each one turns lower-casing back on.
                    .lowercase(false),
            )
            .merge(aliases::provider(aliases::Precedence::Override, &env))
            .join(aliases::provider(aliases::Precedence::Fallback, &env))
            .extract()
            .map_err(|e| ConfigError(keys::describe(&e)))?;
        let cwd = std::env::current_dir()
            .map_err(|e| ConfigError(format!("cannot read the current directory: {e}")))?;
        config.resolve_paths(&cwd);
        Ok(config)
    }

    /// Logs, once at start-up, the paths in effect (`master_key`: where the credential
    /// store's key came from) and any `RDEV_*` variable that was skipped as no key.
    pub fn log_startup(&self, master_key: &dyn std::fmt::Display) {
        self.log_paths(master_key);
        keys::warn_ignored_env();
    }

    /// How long a worker's claim lasts without a heartbeat (`worker_lease_secs`, at least
    /// 3 s so a heartbeat every third of it stays meaningful).
    pub fn worker_lease(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.worker_lease_secs.max(3))
    }

    /// Where new bare repositories go.
    pub fn git_root(&self) -> PathBuf {
        self.git_root
            .clone()
            .unwrap_or_else(|| self.data_dir.join("repos"))
    }

    /// The identity on rdev's commits.
    pub fn author(&self) -> crate::git::Author {
        crate::git::Author {
            name: self.commit_author_name.clone(),
            email: self.commit_author_email.clone(),
        }
    }

    /// The request limits builds are validated against.
    pub fn limits(&self) -> RequestLimits {
        RequestLimits {
            max_timeout: Duration::from_secs(self.max_timeout_secs),
            max_prompt_bytes: self.max_prompt_bytes,
        }
    }
}

#[cfg(test)]
// figment's `Jail` closures return its large error type; that is its API, not ours.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn file_then_env_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "rdev.toml",
                "listen = \"127.0.0.1:9000\"\ndatabase_url = \"sqlite:x.db\"\n",
            )?;
            jail.set_env("RDEV_DATABASE_URL", "sqlite:y.db");
            jail.set_env("RDEV_API_TOKEN", "tok-123");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.listen.port(), 9000);
            let cwd = std::env::current_dir().unwrap();
            assert_eq!(c.database_url, format!("sqlite:{}/y.db", cwd.display()));
            assert_eq!(c.api_token.as_ref().map(|t| t.expose()), Some("tok-123"));
            assert!(!format!("{c:?}").contains("tok-123"));
            Ok(())
        });
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let err = Config::load(Some(Path::new("/nonexistent/rdev.toml"))).unwrap_err();
        assert!(err.to_string().contains("does not exist"));
    }

    #[test]
    fn bad_value_names_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("RDEV_LISTEN", "not-an-address");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.to_lowercase().contains("listen"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn an_empty_api_token_is_an_error_not_an_open_api() {
        for value in ["", "  "] {
            figment::Jail::expect_with(|jail| {
                jail.set_env("RDEV_API_TOKEN", value);
                let err = Config::load(None).unwrap_err().to_string();
                assert!(err.contains("api_token is empty"), "{err}");
                assert!(!err.contains('\n'), "{err}");
                Ok(())
            });
        }
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "rdev.toml",
                "api_token = \"\"\nallow_unauthenticated = true\n",
            )?;
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("api_token is empty"), "{err}");
            jail.create_file("rdev.toml", "allow_unauthenticated = true\n")?;
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert!(c.allow_unauthenticated && c.api_token.is_none());
            Ok(())
        });
    }
}
