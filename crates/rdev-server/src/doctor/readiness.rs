//! Whether each code agent provider can take a build on this node: `ready`,
//! `not_configured` (no model credentials, see [`super::credentials`]) or `unavailable`
//! (its adapter could not be set up, its binary is missing, or its sandbox cannot start).
//! `GET /agents`, `/readyz`, the start-up log and `rdev doctor` share these answers. No
//! network call is made; the sandbox start check runs bwrap once and remembers a success.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc};

use rdev_agents::{
    claude_code::TransportConfig,
    sandbox::{find_program, Sandbox, SandboxMode},
};
use rdev_core::{AgentProvider, ProviderRegistry};
use serde::Serialize;

use super::credentials::{model_credentials, Credentials};
use crate::config::Config;

/// One provider's readiness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ProviderState {
    /// Builds can run.
    Ready,
    /// It has no model credentials; builds are refused with `agent_not_configured`.
    NotConfigured { reason: String, fix: String },
    /// It cannot run on this node.
    Unavailable { reason: String, fix: String },
}

impl ProviderState {
    /// Whether builds can run.
    pub fn is_ready(&self) -> bool {
        matches!(self, Self::Ready)
    }

    /// `ready`, `not_configured` or `unavailable`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::NotConfigured { .. } => "not_configured",
            Self::Unavailable { .. } => "unavailable",
        }
    }
}

/// The binary an enabled provider runs on this node.
#[derive(Debug, Clone)]
pub struct AgentBinary {
    /// As configured or discovered (a bare name is looked up on `PATH`).
    pub path: PathBuf,
    /// What it is (`claude`, `opencode`, `kubectl`).
    pub program: &'static str,
    /// The setting that names it, for fixes.
    pub setting: &'static str,
}

/// The binary provider `id` starts locally; `None` when it starts none (an OpenCode server
/// rdev does not supervise, a provider rdev has no configuration for).
pub fn agent_binary(config: &Config, id: &str) -> Option<AgentBinary> {
    match id {
        AgentProvider::CLAUDE_CODE => Some(match &config.agents.claude_code.transport {
            TransportConfig::Local => AgentBinary {
                path: config.agents.claude_code.resolve_bin(),
                program: "claude",
                setting: "agents.claude_code.bin (or RDEV_CLAUDE_BIN)",
            },
            TransportConfig::Kubectl(k) => AgentBinary {
                path: k.kubectl_bin.clone(),
                program: "kubectl",
                setting: "agents.claude_code.transport.kubectl_bin",
            },
        }),
        AgentProvider::OPENCODE => {
            let oc = config.agents.opencode.clone();
            oc.url.is_none().then(|| AgentBinary {
                path: oc.resolve_bin(),
                program: "opencode",
                setting: "agents.opencode.bin (or RDEV_OPENCODE_BIN)",
            })
        }
        _ => None,
    }
}

/// Whether provider `id` runs its agent in rdev's local sandbox (not in a pod, not on a
/// server rdev does not supervise).
pub fn uses_local_sandbox(config: &Config, id: &str) -> bool {
    config.agents.sandbox == SandboxMode::Bubblewrap
        && matches!(config.agents.isolation(id), "bubblewrap")
        && agent_binary(config, id).is_some()
}

/// The fix for a sandbox that cannot start.
pub const SANDBOX_FIX: &str = "install bubblewrap (`apt-get install bubblewrap`; \
    scripts/setup-tools does as root) and allow unprivileged user namespaces, or point \
    agents.bwrap_bin at it; agents.sandbox = \"none\" runs agents unsandboxed \
    (docs/security.md)";

/// Provider readiness on one node: what went wrong setting adapters up (kept from start-up)
/// and the sandbox every local agent shares. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Readiness {
    /// Providers in `agents.enabled` whose adapter could not be built, with the reason.
    setup_failures: Arc<BTreeMap<String, String>>,
    sandbox: Sandbox,
}

impl Readiness {
    /// Readiness for `config`, given the providers whose adapter could not be built.
    pub fn new(config: &Config, setup_failures: BTreeMap<String, String>) -> Self {
        Self {
            setup_failures: Arc::new(setup_failures),
            sandbox: Sandbox::new(config.agents.sandbox_config()),
        }
    }

    /// Every provider to report: `agents.enabled` in order, then any other registered one.
    pub fn providers(config: &Config, registry: &ProviderRegistry) -> Vec<String> {
        let mut ids = config.agents.enabled.clone();
        for id in registry.list() {
            if !ids.iter().any(|i| i == id.as_str()) {
                ids.push(id.to_string());
            }
        }
        ids
    }

    /// Provider `id`'s readiness: a setup failure or a missing binary or sandbox first
    /// (`unavailable`), then credentials (`not_configured`).
    pub async fn state(
        &self,
        config: &Config,
        registry: &ProviderRegistry,
        id: &str,
    ) -> ProviderState {
        if let Some(reason) = self.setup_failures.get(id) {
            return ProviderState::Unavailable {
                reason: reason.clone(),
                fix: format!("fix the [agents] settings of {id}; `rdev doctor` checks them"),
            };
        }
        if registry.get(id).is_err() {
            return ProviderState::Unavailable {
                reason: format!("{id} is not registered on this node"),
                fix: "list it in agents.enabled".into(),
            };
        }
        if let Some(bin) = agent_binary(config, id) {
            if find_program(&bin.path).is_none() {
                return ProviderState::Unavailable {
                    reason: format!(
                        "the {} binary was not found at {}",
                        bin.program,
                        bin.path.display()
                    ),
                    fix: format!("run scripts/setup-tools, or set {}", bin.setting),
                };
            }
        }
        if uses_local_sandbox(config, id) {
            if let Err(e) = self.sandbox.check().await {
                return ProviderState::Unavailable {
                    reason: format!("the agent sandbox cannot start: {e}"),
                    fix: SANDBOX_FIX.into(),
                };
            }
        }
        match model_credentials(config, id) {
            Credentials::Missing(e) => ProviderState::NotConfigured {
                reason: e.missing,
                fix: e.fix,
            },
            Credentials::Found(_) | Credentials::Stored { .. } | Credentials::Elsewhere(_) => {
                ProviderState::Ready
            }
        }
    }

    /// Every provider's readiness, in [`Self::providers`] order.
    pub async fn states(
        &self,
        config: &Config,
        registry: &ProviderRegistry,
    ) -> Vec<(String, ProviderState)> {
        let mut out = Vec::new();
        for id in Self::providers(config, registry) {
            let state = self.state(config, registry, &id).await;
            out.push((id, state));
        }
        out
    }

    /// Logs one line per provider (what `rdev serve` and `rdev worker` print at start).
    pub async fn log(&self, config: &Config, registry: &ProviderRegistry) {
        let states = self.states(config, registry).await;
        if states.is_empty() {
            tracing::warn!("no agent provider is enabled: builds cannot run on this node");
        }
        for (id, state) in states {
            match &state {
                ProviderState::Ready => {
                    tracing::info!(provider = %id, state = state.as_str(), "provider {id} is ready")
                }
                ProviderState::NotConfigured { reason, fix }
                | ProviderState::Unavailable { reason, fix } => tracing::warn!(
                    provider = %id,
                    state = state.as_str(),
                    "provider {id} is {}: {reason}; {fix}",
                    state.as_str().replace('_', " ")
                ),
            }
        }
    }
}
