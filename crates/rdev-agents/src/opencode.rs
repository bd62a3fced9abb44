//! OpenCode adapter: [`OpenCodeAgent`] drives `opencode serve` over HTTP and SSE — a
//! configured server ([`OpenCodeConfig::url`], `RDEV_OPENCODE_URL`) or one it supervises
//! itself ([`OpenCodeServer`]). This file owns the endpoint choice and the run table that
//! makes cancel work before, during and after a run; the wire lives in [`client`], event
//! mapping in [`events`], one run's lifecycle in [`run`], the server process in
//! [`supervisor`]. It must never put the password or a secret into a URL, log or event.

pub mod client;
pub mod config;
pub mod events;
mod resume;
mod run;
pub mod supervisor;

use std::{sync::Mutex, time::Duration};

pub use client::{ClientError, Health, OpenCodeClient, ServerEvent, SessionInfo};
pub use config::{ConfigError, ModelRef, OpenCodeConfig, ServerConfig};
pub use events::{summarize, EventMapper, Summary};
use rdev_core::{
    AgentError, AgentProvider, AgentRequest, AgentResult, AgentStatus, Capabilities, CodeAgent,
    ErrorCode, EventSink, RequestLimits, RunId, ValidationError,
};
pub use supervisor::{OpenCodeServer, ServerState, SupervisorError};
use tokio_util::sync::CancellationToken;

use crate::{
    common,
    redact::EventRedactor,
    run_table::RunTable,
    sandbox::{Sandbox, SandboxMode},
};

/// Why the adapter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum OpenCodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    /// [`OpenCodeAgent::connect`] needs a URL.
    #[error("no opencode url configured (set [agents.opencode] url or RDEV_OPENCODE_URL)")]
    NoUrl,
}

impl ErrorCode for OpenCodeError {
    fn code(&self) -> &'static str {
        match self {
            Self::Config(e) => e.code(),
            Self::Client(e) => e.code(),
            Self::Supervisor(e) => e.code(),
            Self::NoUrl => "opencode_url_missing",
        }
    }
}

/// Where runs find their server.
#[derive(Debug)]
enum Endpoint {
    /// A server rdev does not manage.
    Fixed(OpenCodeClient),
    /// A server rdev supervises; clients are built per server generation.
    Supervised {
        server: OpenCodeServer,
        client: Mutex<Option<(u32, OpenCodeClient)>>,
    },
}

/// `opencode serve` as a [`CodeAgent`].
#[derive(Debug)]
pub struct OpenCodeAgent {
    config: OpenCodeConfig,
    endpoint: Endpoint,
    runs: RunTable,
    /// Secret values that must never leave the adapter in events or results.
    redactor: EventRedactor,
    /// The supervised server's sandbox, checked before each run.
    sandbox: Sandbox,
}

impl OpenCodeAgent {
    /// An adapter for the server at `config.url` (which rdev's configuration sets from
    /// `RDEV_OPENCODE_URL`).
    pub fn connect(config: OpenCodeConfig) -> Result<Self, OpenCodeError> {
        config.validate()?;
        let url = config.url.as_deref().ok_or(OpenCodeError::NoUrl)?;
        let base = config::parse_base_url(url)?;
        let auth = config
            .password
            .clone()
            .map(|p| (config.username().to_owned(), p));
        let client = OpenCodeClient::new(base, auth, config.request_timeout)?;
        Ok(Self {
            redactor: config.redactor(None),
            sandbox: Sandbox::new(config.server.sandbox.clone()),
            config,
            endpoint: Endpoint::Fixed(client),
            runs: RunTable::default(),
        })
    }

    /// An adapter that starts and supervises its own `opencode serve` until `shutdown`
    /// fires or the adapter is dropped. Must be called inside a tokio runtime.
    pub fn supervise(
        config: OpenCodeConfig,
        shutdown: &CancellationToken,
    ) -> Result<Self, OpenCodeError> {
        config.validate()?;
        let server = OpenCodeServer::start(&config, shutdown)?;
        Ok(Self {
            redactor: server.redactor().clone(),
            sandbox: Sandbox::new(config.server.sandbox.clone()),
            config,
            endpoint: Endpoint::Supervised {
                server,
                client: Mutex::new(None),
            },
            runs: RunTable::default(),
        })
    }

    /// The adapter as configured: [`Self::connect`] when a URL is set, else
    /// [`Self::supervise`] with a server that lives as long as the adapter. Must be called
    /// inside a tokio runtime.
    pub fn new(config: OpenCodeConfig) -> Result<Self, OpenCodeError> {
        Self::from_config(config, &CancellationToken::new())
    }

    /// [`Self::connect`] when a URL is configured, else [`Self::supervise`].
    pub fn from_config(
        config: OpenCodeConfig,
        shutdown: &CancellationToken,
    ) -> Result<Self, OpenCodeError> {
        if config.url.is_some() {
            Self::connect(config)
        } else {
            Self::supervise(config, shutdown)
        }
    }

    /// Fails closed when the supervised server's sandbox cannot start, or cannot see the
    /// run's directory (it sees only the configured task roots). A server rdev does not
    /// supervise is the operator's boundary (docs/security.md).
    async fn check_sandbox(&self, request: &AgentRequest) -> Result<(), AgentError> {
        let server = &self.config.server;
        if self.server().is_none() || server.sandbox.mode == SandboxMode::None {
            return Ok(());
        }
        self.sandbox.check().await?;
        let dir = std::path::absolute(&request.workdir).unwrap_or(request.workdir.clone());
        if server.task_roots.iter().any(|root| dir.starts_with(root)) {
            Ok(())
        } else {
            Err(AgentError::SandboxUnavailable(format!(
                "{} is outside the opencode sandbox's task roots ({:?})",
                dir.display(),
                server.task_roots
            )))
        }
    }

    /// The supervised server, if this adapter runs its own.
    pub fn server(&self) -> Option<&OpenCodeServer> {
        match &self.endpoint {
            Endpoint::Supervised { server, .. } => Some(server),
            Endpoint::Fixed(_) => None,
        }
    }

    /// A client for the current server; waits for a supervised server to be ready.
    pub async fn client(&self) -> Result<OpenCodeClient, AgentError> {
        match &self.endpoint {
            Endpoint::Fixed(c) => Ok(c.clone()),
            Endpoint::Supervised { server, client } => {
                let (url, generation, socket) = server
                    .wait_endpoint(self.config.availability_timeout)
                    .await
                    .map_err(|e| AgentError::Unavailable {
                        waited: self.config.availability_timeout,
                        reason: e.to_string(),
                    })?;
                let mut cached = client.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((g, c)) = cached.as_ref() {
                    if *g == generation {
                        return Ok(c.clone());
                    }
                }
                let c = OpenCodeClient::with_socket(
                    url,
                    socket.as_deref(),
                    Some(server.credentials()),
                    self.config.request_timeout,
                )
                .map_err(AgentError::from)?;
                *cached = Some((generation, c.clone()));
                Ok(c)
            }
        }
    }
}

#[async_trait::async_trait]
impl CodeAgent for OpenCodeAgent {
    fn provider(&self) -> AgentProvider {
        AgentProvider::opencode()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            resume: true,
            cancel: true,
            streaming: true,
            models: Vec::new(),
            cost_reporting: true,
            // One shared server: a CONNECT from its tools cannot be told to be a task's.
            network_allow: false,
        }
    }

    async fn execute(
        &self,
        request: AgentRequest,
        events: EventSink,
    ) -> Result<AgentResult, AgentError> {
        request.validate(&RequestLimits::UNBOUNDED)?;
        if !request.env.is_empty() {
            // One server runs every session, so a per-run environment cannot reach the
            // agent's tools; refusing is better than silently running without it.
            return Err(AgentError::Invalid(ValidationError::InvalidField {
                field: "env",
                reason: "opencode sessions share one server process; configure the \
                         environment under [agents.opencode.server] env instead"
                    .to_owned(),
            }));
        }
        self.check_sandbox(&request).await?;
        // A run that never reached the server ends as cancelled, and reports it.
        let cancelled = |why: &str| {
            let session = request.session_id.clone();
            let (status, output) = (AgentStatus::Cancelled, why.to_owned());
            common::end_early(&events, status, output, session, Duration::ZERO)
        };
        let Some(active) = self.runs.register(request.run_id) else {
            return Ok(cancelled("cancelled before start").await);
        };
        let token = active.token().clone();
        let client = tokio::select! {
            c = self.client() => c?,
            _ = token.cancelled() => {
                return Ok(cancelled("cancelled before the server was ready").await);
            }
        };
        let ctx = run::RunContext {
            config: &self.config,
            client,
            redactor: &self.redactor,
        };
        run::run(ctx, request, events, token).await
    }

    async fn cancel(&self, run: RunId) -> Result<(), AgentError> {
        self.runs.cancel(run);
        Ok(())
    }
}
