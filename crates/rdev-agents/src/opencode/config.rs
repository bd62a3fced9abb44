//! [`OpenCodeConfig`]: how rdev reaches `opencode serve` — a configured URL, or a server
//! rdev starts and supervises itself — plus auth, timeouts and the default model. It is
//! embedded in rdev's configuration under `[agents.opencode]`; every field has a default.
//! This module resolves settings and environment overrides; it never opens a connection
//! or starts a process.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use rdev_core::{ErrorCode, SecretString, DEFAULT_AVAILABILITY_TIMEOUT};
use serde::Deserialize;

use crate::{
    redact::EventRedactor,
    sandbox::SandboxConfig,
    settings::{self, secs},
};

/// Environment variable that overrides [`OpenCodeConfig::url`].
pub const URL_ENV: &str = "RDEV_OPENCODE_URL";
/// Environment variable that overrides [`OpenCodeConfig::bin`].
pub const BIN_ENV: &str = "RDEV_OPENCODE_BIN";
/// The server's own password variable; rdev reads it for the client and passes it to a
/// supervised server.
pub const PASSWORD_ENV: &str = "OPENCODE_SERVER_PASSWORD";
/// The server's own user-name variable (the server defaults to `opencode`).
pub const USERNAME_ENV: &str = "OPENCODE_SERVER_USERNAME";
/// Where `scripts/setup-tools` installs the CLI, relative to the repository root.
pub const SETUP_TOOLS_BIN: &str = ".tools/node_modules/.bin/opencode";
/// The user name `opencode serve` expects when none is configured.
pub const DEFAULT_USERNAME: &str = "opencode";

/// Settings of the OpenCode adapter.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenCodeConfig {
    /// Base URL of a running `opencode serve` (e.g. `http://127.0.0.1:4096`). When unset,
    /// rdev starts and supervises its own server. `RDEV_OPENCODE_URL` overrides it.
    pub url: Option<String>,
    /// The `opencode` binary for a supervised server. `RDEV_OPENCODE_BIN` overrides it;
    /// when neither is set, the one `scripts/setup-tools` installed, else `opencode` on
    /// `PATH`.
    pub bin: Option<PathBuf>,
    /// HTTP basic-auth password. `OPENCODE_SERVER_PASSWORD` fills it when unset. A
    /// supervised server without one gets a random password per start.
    pub password: Option<SecretString>,
    /// HTTP basic-auth user name (`OPENCODE_SERVER_USERNAME`, default `opencode`).
    pub username: Option<String>,
    /// How long to wait for the server to answer (health check, SSE subscription, a
    /// supervised server's start) before failing as unavailable.
    #[serde(with = "secs")]
    pub availability_timeout: Duration,
    /// Default model as `provider/model` (e.g. `anthropic/claude-sonnet-4-5`); `None`
    /// leaves the choice to the server's own configuration.
    pub model: Option<String>,
    /// Timeout of one short HTTP call (create session, send prompt, abort, status).
    #[serde(with = "secs")]
    pub request_timeout: Duration,
    /// After an abort, how long the session may take to report idle before the run is
    /// closed anyway.
    #[serde(with = "secs")]
    pub abort_grace: Duration,
    /// Settings of the server rdev supervises when [`Self::url`] is unset.
    pub server: ServerConfig,
}

/// Settings of a supervised `opencode serve`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Root of the server's private state (`XDG_DATA_HOME`, `XDG_CONFIG_HOME`,
    /// `XDG_CACHE_HOME` below it); default `$XDG_STATE_HOME/rdev/opencode`. Two servers
    /// sharing one data dir block each other, so each supervisor needs its own.
    pub state_dir: Option<PathBuf>,
    /// An `opencode.json` passed as `OPENCODE_CONFIG` (providers, permissions, models).
    pub config_file: Option<PathBuf>,
    /// Inline configuration JSON passed as `OPENCODE_CONFIG_CONTENT`. May hold API keys,
    /// so it is a secret.
    pub config_content: Option<SecretString>,
    /// Extra environment for the server (provider API keys, ...). Values are secrets.
    pub env: BTreeMap<String, SecretString>,
    /// Variables passed through from rdev's own environment; a trailing `*` matches a
    /// prefix. Everything else is withheld so rdev's own secrets never reach the agent.
    pub inherit_env: Vec<String>,
    /// After `SIGTERM`, how long the server may take to exit before `SIGKILL`.
    #[serde(with = "secs")]
    pub kill_grace: Duration,
    /// Shortest wait before restarting a server that died.
    #[serde(with = "secs")]
    pub restart_min_delay: Duration,
    /// Longest wait before restarting a server that keeps dying.
    #[serde(with = "secs")]
    pub restart_max_delay: Duration,
    /// The sandbox the server starts in; set from `[agents]` (`sandbox`, `bwrap_bin`,
    /// `sandbox_read_only`), not from this table. Bubblewrap by default.
    #[serde(skip)]
    pub sandbox: SandboxConfig,
    /// Directories task checkouts live under: one server serves every session, so its
    /// sandbox sees these read-write (see docs/decisions.md). rdev sets them from its
    /// data directory; a run whose directory is outside them fails closed.
    #[serde(skip)]
    pub task_roots: Vec<PathBuf>,
    /// Directories the server's sandbox sees read-only (the checkouts' git directories
    /// and the object stores they borrow from, so an agent's own `git status` works).
    #[serde(skip)]
    pub task_read_only: Vec<PathBuf>,
}

impl Default for OpenCodeConfig {
    fn default() -> Self {
        Self {
            url: None,
            bin: None,
            password: None,
            username: None,
            availability_timeout: DEFAULT_AVAILABILITY_TIMEOUT,
            model: None,
            request_timeout: Duration::from_secs(30),
            abort_grace: Duration::from_secs(10),
            server: ServerConfig::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            state_dir: None,
            config_file: None,
            config_content: None,
            env: BTreeMap::new(),
            inherit_env: crate::env::DEFAULT_INHERIT_ENV
                .iter()
                .chain(EXTRA_INHERIT_ENV)
                .map(|s| (*s).to_owned())
                .collect(),
            kill_grace: Duration::from_secs(5),
            restart_min_delay: Duration::from_millis(500),
            restart_max_delay: Duration::from_secs(30),
            sandbox: SandboxConfig::default(),
            task_roots: Vec::new(),
            task_read_only: Vec::new(),
        }
    }
}

/// Variables passed through to a supervised server besides the CLI defaults
/// ([`crate::env::DEFAULT_INHERIT_ENV`]: paths, locale, proxies, CA
/// bundles, `ANTHROPIC_*` keys): OpenCode's own switches.
pub const EXTRA_INHERIT_ENV: &[&str] = &["OPENCODE_DISABLE_*", "OPENCODE_MODELS_PATH"];

/// Invalid OpenCode settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The URL is not an absolute `http`/`https` URL.
    #[error("invalid opencode url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// A model that is not `provider/model`.
    #[error("invalid opencode model {0:?}: expected provider/model")]
    InvalidModel(String),
    /// An environment variable name that is not `[A-Za-z_][A-Za-z0-9_]*`.
    #[error("invalid environment variable name {0:?}")]
    InvalidEnvName(String),
}

impl ErrorCode for ConfigError {
    fn code(&self) -> &'static str {
        match self {
            Self::InvalidUrl { .. } => "opencode_invalid_url",
            Self::InvalidModel(_) => "opencode_invalid_model",
            Self::InvalidEnvName(_) => "invalid_env_name",
        }
    }
}

/// A model reference split into OpenCode's `providerID` and `modelID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRef {
    /// OpenCode's provider id, e.g. `anthropic`.
    pub provider_id: String,
    /// The model id within that provider, e.g. `claude-sonnet-4-5`.
    pub model_id: String,
}

impl ModelRef {
    /// Parses `provider/model` (the model part may itself contain `/`).
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        match s.trim().split_once('/') {
            Some((p, m)) if !p.is_empty() && !m.is_empty() => Ok(Self {
                provider_id: p.to_owned(),
                model_id: m.to_owned(),
            }),
            _ => Err(ConfigError::InvalidModel(s.to_owned())),
        }
    }
}

impl OpenCodeConfig {
    /// Checks settings that would otherwise fail at the first run.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.url {
            parse_base_url(url)?;
        }
        if let Some(model) = &self.model {
            ModelRef::parse(model)?;
        }
        for name in self.server.env.keys() {
            if !crate::env::is_valid_name(name) {
                return Err(ConfigError::InvalidEnvName(name.clone()));
            }
        }
        Ok(())
    }

    /// A redactor for every secret of this configuration (password, server env, inline
    /// server config, the gateway's server token) plus `server_password`, the password a
    /// supervised server actually uses. Built once per adapter: none of them change while it runs.
    pub fn redactor(&self, server_password: Option<&SecretString>) -> EventRedactor {
        let gateway_token = self
            .server
            .sandbox
            .gateway
            .as_ref()
            .and_then(|g| g.server_token.as_ref());
        EventRedactor::new(
            self.server
                .env
                .values()
                .chain(&self.password)
                .chain(&self.server.config_content)
                .chain(server_password)
                .chain(gateway_token)
                .map(SecretString::expose),
        )
    }

    /// The basic-auth user name in effect.
    pub fn username(&self) -> &str {
        self.username.as_deref().unwrap_or(DEFAULT_USERNAME)
    }

    /// The binary a supervised server runs: [`Self::bin`], else the one `scripts/setup-tools`
    /// installed (found above the current directory or the running executable), else
    /// `opencode` from `PATH`.
    pub fn resolve_bin(&self) -> PathBuf {
        if let Some(bin) = &self.bin {
            return bin.clone();
        }
        settings::discover_setup_tools_bin(SETUP_TOOLS_BIN)
            .unwrap_or_else(|| PathBuf::from("opencode"))
    }

    /// The root of a supervised server's private state.
    pub fn resolve_state_dir(&self) -> PathBuf {
        match &self.server.state_dir {
            Some(dir) => dir.clone(),
            None => settings::state_dir("opencode"),
        }
    }
}

/// Parses a server base URL: absolute, `http` or `https`, no credentials in it (they
/// would end up in logs; use [`OpenCodeConfig::password`]).
pub fn parse_base_url(url: &str) -> Result<reqwest::Url, ConfigError> {
    let bad = |reason: &str| ConfigError::InvalidUrl {
        url: redact_userinfo(url),
        reason: reason.to_owned(),
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("scheme must be http or https"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad(
            "credentials in the URL are not allowed; set the password",
        ));
    }
    Ok(parsed)
}

/// `url` with anything before an `@` in its authority replaced, for error messages.
fn redact_userinfo(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://[redacted]@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deserializes_with_defaults_and_hides_the_password() {
        let cfg: OpenCodeConfig = serde_json::from_value(serde_json::json!({
            "url": "http://127.0.0.1:4096",
            "password": "pw-value-123",
            "availability_timeout": 2.5,
            "model": "anthropic/claude-sonnet-4-5",
            "server": {"env": {"ANTHROPIC_API_KEY": "k-value-456"}}
        }))
        .unwrap();
        assert_eq!(cfg.availability_timeout, Duration::from_millis(2500));
        assert_eq!(cfg.abort_grace, Duration::from_secs(10));
        assert_eq!(cfg.username(), "opencode");
        let dbg = format!("{cfg:?}");
        assert!(
            !dbg.contains("pw-value-123") && !dbg.contains("k-value-456"),
            "{dbg}"
        );
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn rejects_bad_urls_models_and_env_names_with_codes() {
        let with_url = |u: &str| OpenCodeConfig {
            url: Some(u.into()),
            ..OpenCodeConfig::default()
        };
        assert_eq!(
            with_url("not a url").validate().unwrap_err().code(),
            "opencode_invalid_url"
        );
        assert_eq!(
            with_url("ftp://x").validate().unwrap_err().code(),
            "opencode_invalid_url"
        );
        let err = with_url("http://u:hunter2@127.0.0.1:1")
            .validate()
            .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let cfg = OpenCodeConfig {
            model: Some("no-slash".into()),
            ..OpenCodeConfig::default()
        };
        assert_eq!(cfg.validate().unwrap_err().code(), "opencode_invalid_model");
        let mut cfg = OpenCodeConfig::default();
        cfg.server
            .env
            .insert("BAD-NAME".into(), SecretString::new("v"));
        assert_eq!(cfg.validate().unwrap_err().code(), "invalid_env_name");
    }

    #[test]
    fn model_refs_split_at_the_first_slash() {
        let m = ModelRef::parse("openrouter/meta/llama").unwrap();
        assert_eq!(m.provider_id, "openrouter");
        assert_eq!(m.model_id, "meta/llama");
        assert!(ModelRef::parse("/x").is_err());
        assert!(ModelRef::parse("x/").is_err());
    }
}
