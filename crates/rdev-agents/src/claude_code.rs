//! Claude Code adapter: [`ClaudeCodeAgent`] runs `claude -p --output-format stream-json
//! --verbose` with the prompt on stdin, locally or through `kubectl exec`, maps its stream to
//! `AgentEvent`s and ends every run with an `AgentResult`. This file wires the pieces: cancel
//! before, during and after a run is [`crate::run_table`]'s, process handling
//! [`crate::process`]'s, argv/env and the read loop in [`run`], parsing in [`stream`]. It must
//! never pass the prompt or a secret through argv or a shell.

pub mod config;
pub mod run;
pub mod sessions;
pub mod stream;
pub mod transport;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

pub use config::{ClaudeCodeConfig, ConfigError, KubectlConfig, PermissionMode, TransportConfig};
use rdev_core::{
    AgentError, AgentProvider, AgentRequest, AgentResult, AgentStatus, Capabilities, CodeAgent,
    EventSink, RequestLimits, RunId,
};
pub use stream::{FinalResult, LineReader, StreamParser};
use tracing::Instrument;
pub use transport::{KubectlTransport, LocalTransport, Transport};

use crate::{common, run_table::RunTable};

/// The Claude Code CLI as a [`CodeAgent`].
#[derive(Debug)]
pub struct ClaudeCodeAgent {
    config: ClaudeCodeConfig,
    transport: Arc<dyn Transport>,
    bin: PathBuf,
    runs: RunTable,
}

impl ClaudeCodeAgent {
    /// An adapter for `config` (validated; the binary is resolved once, here).
    pub fn new(config: ClaudeCodeConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let transport: Arc<dyn Transport> = match &config.transport {
            TransportConfig::Local => Arc::new(LocalTransport::new(crate::sandbox::Sandbox::new(
                config.sandbox.clone(),
            ))),
            TransportConfig::Kubectl(k) => Arc::new(KubectlTransport::new(
                k.clone(),
                crate::env::inherited(&config.inherit_env),
            )),
        };
        let bin = config.resolve_bin();
        Ok(Self {
            config,
            transport,
            bin,
            runs: RunTable::default(),
        })
    }
}

#[async_trait::async_trait]
impl CodeAgent for ClaudeCodeAgent {
    fn provider(&self) -> AgentProvider {
        AgentProvider::claude_code()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            resume: true,
            cancel: true,
            streaming: true,
            models: Vec::new(),
            cost_reporting: true,
            network_allow: self.config.gateway_base_url().is_some(),
        }
    }

    async fn execute(
        &self,
        request: AgentRequest,
        events: EventSink,
    ) -> Result<AgentResult, AgentError> {
        request.validate(&RequestLimits::UNBOUNDED)?;
        let Some(active) = self.runs.register(request.run_id) else {
            let output = "cancelled before start".to_owned();
            let session = request.session_id.clone();
            let status = AgentStatus::Cancelled;
            return Ok(common::end_early(&events, status, output, session, Duration::ZERO).await);
        };
        let ctx = run::RunContext {
            config: &self.config,
            transport: self.transport.as_ref(),
            bin: &self.bin,
        };
        let span = tracing::info_span!("claude_code", run = %request.run_id, provider = AgentProvider::CLAUDE_CODE);
        run::run(ctx, request, events, active.token().clone())
            .instrument(span)
            .await
    }

    async fn cancel(&self, run: RunId) -> Result<(), AgentError> {
        self.runs.cancel(run);
        Ok(())
    }

    /// The per-directory `CLAUDE_CONFIG_DIR` (session transcripts, the CLI's state), when
    /// runs are isolated. Made by a run, removed by whoever owns the workspace.
    fn workdir_state(&self, workdir: &Path) -> Vec<PathBuf> {
        self.config.config_dir(workdir).into_iter().collect()
    }

    fn orphaned_state(&self, root: &Path) -> Vec<PathBuf> {
        if self.config.config_dir(root).is_none() {
            return Vec::new();
        }
        config::orphaned_config_dirs(&self.config.resolve_config_root(), root)
    }
}
