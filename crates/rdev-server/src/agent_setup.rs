//! Setting up the code agents a node runs: one adapter per provider named in
//! `agents.enabled`, configured from `[agents]` with the sandbox and the gateway, and the
//! readiness report of each. `rdev serve`, `rdev worker` and `rdev agent run` all build
//! their agents here. It must not start a build or read a task.

use std::sync::Arc;

use rdev_agents::{claude_code::ClaudeCodeAgent, opencode::OpenCodeAgent};
use rdev_core::{AgentProvider, CodeAgent, ProviderRegistry};
use tokio_util::sync::CancellationToken;

use crate::{config::Config, doctor::readiness::Readiness, git::GitWorkspaces};

/// Why [`build_agent`] could not make an adapter.
#[derive(Debug, thiserror::Error)]
pub enum AgentSetupError {
    #[error("unknown provider {0:?} (known: {known})", known = KNOWN_PROVIDERS)]
    Unknown(String),
    /// The provider is known but cannot run here (e.g. its CLI is missing).
    #[error("{0}")]
    Unavailable(String),
}

const KNOWN_PROVIDERS: &str = "claude-code, opencode";

/// The adapter for provider `id`, configured from `config.agents` (what `rdev serve` and
/// `rdev agent run` both use). Adding a provider is one match arm.
pub fn build_agent(
    config: &Config,
    id: &str,
    shutdown: &CancellationToken,
) -> Result<Arc<dyn CodeAgent>, AgentSetupError> {
    let unavailable = |e: &dyn std::fmt::Display| AgentSetupError::Unavailable(e.to_string());
    let sandbox = config.agents.sandbox_config();
    match id {
        AgentProvider::CLAUDE_CODE => {
            let mut claude = config.agents.claude_code.clone();
            claude.sandbox = sandbox;
            ClaudeCodeAgent::new(claude)
                .map(|a| Arc::new(a) as Arc<dyn CodeAgent>)
                .map_err(|e| unavailable(&e))
        }
        AgentProvider::OPENCODE => {
            let mut opencode = config.agents.opencode.clone();
            let (writable, read_only) = GitWorkspaces::agent_roots(&config.data_dir.join("git"));
            // The server's sandbox mounts these at start, before the first checkout exists.
            for dir in writable.iter().chain(&read_only) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    AgentSetupError::Unavailable(format!("cannot create {}: {e}", dir.display()))
                })?;
            }
            opencode.server.sandbox = sandbox;
            opencode.server.task_roots = writable;
            opencode.server.task_read_only = read_only;
            OpenCodeAgent::from_config(opencode, shutdown)
                .map(|a| Arc::new(a) as Arc<dyn CodeAgent>)
                .map_err(|e| unavailable(&e))
        }
        other => Err(AgentSetupError::Unknown(other.to_owned())),
    }
}

/// The code agents named in `config.agents.enabled`, the first being the default, and their
/// readiness. An agent that cannot be set up is skipped (so one broken provider does not
/// stop rdev) and reported `unavailable` with the reason.
pub fn build_registry(
    config: &Config,
    shutdown: &CancellationToken,
) -> anyhow::Result<(ProviderRegistry, Readiness)> {
    let registry = ProviderRegistry::new();
    let mut failures = std::collections::BTreeMap::new();
    if config.agents.sandbox == rdev_agents::sandbox::SandboxMode::None {
        tracing::warn!(
            "agents.sandbox = \"none\": agents run UNSANDBOXED and can read everything rdev \
             can (data directory, master key, environment); use this only when a VM or \
             container per rdev is the boundary"
        );
    }
    for id in &config.agents.enabled {
        match build_agent(config, id, shutdown) {
            Ok(agent) => registry.register(agent)?,
            Err(AgentSetupError::Unknown(other)) => anyhow::bail!(
                "unknown agent provider {other:?} in agents.enabled (known: {KNOWN_PROVIDERS})"
            ),
            Err(e) => {
                failures.insert(id.clone(), e.to_string());
            }
        }
    }
    Ok((registry, Readiness::new(config, failures)))
}
