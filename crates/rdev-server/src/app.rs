//! [`Application`]: builds every piece from a [`Config`] (database, migrations, store,
//! templates, credential store, agents, worker pool, callback dispatcher, housekeeping,
//! router) and runs them until a shutdown token fires. Tests call `Application::build` on
//! port 0 with their own database; `rdev serve` does the same with the user's config.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use rdev_agents::{claude_code::ClaudeCodeAgent, opencode::OpenCodeAgent};
use rdev_core::{AgentProvider, CodeAgent, ProviderRegistry};
use rdev_store::{Db, SqlStore, SqlTokenStore, StoreConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    api::{self, AppState},
    callbacks::dispatcher::Dispatcher,
    cancels::TaskCancels,
    config::Config,
    doctor::readiness::Readiness,
    gateway::Gateway,
    git::GitWorkspaces,
    housekeeping::{self, Housekeeping, HousekeepingConfig},
    metrics::Metrics,
    secrets::SecretService,
    templates::TemplateRegistry,
    tokens::{check_exposure, TokenService},
    woodpecker::WoodpeckerClient,
    worker::{PoolConfig, Woodpecker, WorkerDeps, WorkerPool},
};

/// A built, not yet running, rdev server.
#[derive(Debug)]
pub struct Application {
    /// `None` for a worker-only node (`rdev worker`).
    listener: Option<TcpListener>,
    state: AppState,
    woodpecker: Option<Woodpecker>,
    shutdown: CancellationToken,
    /// The model gateway every agent's model calls go through.
    gateway: Gateway,
}

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
            let mut opencode = config.agents.opencode.clone().with_env_overrides();
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

/// Opens the database at `url` and brings its schema up to date (what `serve`, `worker`,
/// `migrate` and `secret` all start with). Errors name the URL without its password.
pub async fn open_database(url: &str) -> anyhow::Result<Db> {
    let db = Db::connect(url).await.with_context(|| {
        format!(
            "could not open database {}",
            rdev_store::db::redact_url(url)
        )
    })?;
    db.migrate()
        .await
        .context("could not migrate the database")?;
    Ok(db)
}

impl Application {
    /// Connects the database, runs migrations, loads templates and the master key, sets up
    /// the agents and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_node(config, true).await
    }

    /// The same without the HTTP API: a node that only runs workers and delivers callbacks
    /// (`rdev worker`, for extra nodes sharing one PostgreSQL).
    pub async fn build_worker(config: Config) -> anyhow::Result<Self> {
        Self::build_node(config, false).await
    }

    async fn build_node(mut config: Config, serve_api: bool) -> anyhow::Result<Self> {
        let db = open_database(&config.database_url).await?;
        let tokens = TokenService::from_config(&config, Arc::new(SqlTokenStore::new(db.clone())));
        if serve_api {
            // Before anything else logs, so a refusal is the only line the user sees.
            let stored = tokens
                .has_tokens()
                .await
                .context("could not read the API tokens")?;
            check_exposure(&config, stored)?;
            if tokens.is_open().await? {
                tracing::warn!(
                    "no RDEV_API_TOKEN and no API token exist: the API accepts unauthenticated \
                     requests (create one with `rdev token create NAME --scope admin`)"
                );
            }
        }
        let store = Arc::new(
            SqlStore::new(db.clone(), StoreConfig::default())
                .await
                .context("could not start the store")?,
        );
        let metrics = Metrics::default();
        let settings = config.gateway_settings()?;
        let gateway = Gateway::start(settings, Some(store.clone()), metrics.clone()).await?;
        config.agents.gateway = Some(gateway.link());
        let templates = TemplateRegistry::load(&config.template_dirs)
            .context("could not load the project templates")?;
        let secrets = SecretService::from_config(&config, db.clone())
            .context("could not load the master key for the credential store")?;
        secrets
            .verify_key()
            .await
            .context("the master key does not open this database's secrets")?;
        config.log_startup(secrets.key_source());
        let shutdown = CancellationToken::new();
        let (registry, readiness) = build_registry(&config, &shutdown)?;
        readiness.log(&config, &registry).await;
        let woodpecker = match &config.woodpecker {
            Some(w) => Some(Woodpecker {
                client: WoodpeckerClient::new(&w.url, w.token.clone())
                    .context("invalid woodpecker configuration")?,
                appear_timeout: Duration::from_secs(w.appear_timeout_secs),
                pipeline_timeout: Duration::from_secs(w.pipeline_timeout_secs),
                poll: Duration::from_millis(w.poll_ms),
            }),
            None => None,
        };
        let listener = if serve_api {
            Some(
                TcpListener::bind(config.listen)
                    .await
                    .with_context(|| format!("could not listen on {}", config.listen))?,
            )
        } else {
            None
        };
        Ok(Self {
            listener,
            state: AppState {
                db,
                store,
                templates: Arc::new(templates),
                git: GitWorkspaces::new(config.data_dir.join("git"))
                    .with_spare_limit(config.git_spare_checkouts),
                registry: Arc::new(registry),
                readiness,
                cancels: TaskCancels::default(),
                metrics,
                outbox_wakeup: Arc::default(),
                config: Arc::new(config),
                secrets: Arc::new(secrets),
                tokens,
            },
            woodpecker,
            shutdown,
            gateway,
        })
    }

    /// The port the API listens on (useful with port 0).
    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// The address the API listens on.
    ///
    /// # Panics
    /// On a worker-only node, which has no listener.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .as_ref()
            .expect("a worker-only node has no listener")
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The agents this node runs; more can be registered before `run_until_stopped`.
    pub fn registry(&self) -> Arc<ProviderRegistry> {
        Arc::clone(&self.state.registry)
    }

    /// Cancelling this token stops the server gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The worker dependencies this application uses (also for `rdev worker`).
    fn worker_deps(&self) -> WorkerDeps {
        let s = &self.state;
        WorkerDeps {
            store: Arc::clone(&s.store),
            registry: Arc::clone(&s.registry),
            templates: Arc::clone(&s.templates),
            git: s.git.clone(),
            secrets: Arc::clone(&s.secrets),
            cancels: s.cancels.clone(),
            metrics: s.metrics.clone(),
            outbox_wakeup: Arc::clone(&s.outbox_wakeup),
            woodpecker: self.woodpecker.clone(),
            config: Arc::clone(&s.config),
            gateway: self.gateway.clone(),
        }
    }

    /// Serves the API, runs the workers, the callback dispatcher and the housekeeping
    /// (start-up sweep of crashed runs' leftovers, then kept checkouts, pruning and the
    /// data directory's size) until the shutdown token is cancelled; then stops claiming, lets running tasks and requests finish
    /// within `shutdown_grace_secs` (handing unfinished tasks back to the queue) and closes
    /// the database.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let deps = self.worker_deps();
        let Self {
            listener,
            state,
            shutdown,
            gateway,
            ..
        } = self;
        let grace = Duration::from_secs(state.config.shutdown_grace_secs);
        let db = state.db.clone();
        let housekeeping = Housekeeping::new(
            HousekeepingConfig::from_config(&state.config),
            state.git.clone(),
            Arc::clone(&state.registry),
            Arc::clone(&state.store),
            state.metrics.clone(),
        );
        // Before the workers start, every checkout on disk is a leftover: no attempt of this
        // node runs yet. That holds only if no other process uses the data directory.
        let data_dir = &state.config.data_dir;
        let data_dir_lock = housekeeping::lock_data_dir(data_dir);
        let leftovers = match &data_dir_lock {
            Ok(Some(_)) => Some(housekeeping.find_leftovers().await),
            Ok(None) => {
                tracing::warn!(
                    data_dir = %data_dir.display(),
                    "another rdev process uses this data directory; what crashed runs left                      there is not swept (give every node its own data_dir)"
                );
                None
            }
            Err(e) => {
                tracing::warn!(data_dir = %data_dir.display(), error = %e, "could not lock the data directory; nothing swept at start");
                None
            }
        };
        let pool = WorkerPool::new(deps, PoolConfig::from_config(&state.config));
        let workers = tokio::spawn(pool.run(shutdown.clone()));
        let housekeeping = tokio::spawn(housekeeping.run(shutdown.clone(), leftovers));
        let dispatcher = Dispatcher::new(
            Arc::clone(&state.store),
            state.secrets.clone(),
            state.config.dispatch(),
        )
        .with_wakeup(Arc::clone(&state.outbox_wakeup));
        let dispatch = tokio::spawn(dispatcher.run(shutdown.clone()));
        if let Some(listener) = listener {
            let app = api::router(state);
            let stop = shutdown.clone();
            let server = axum::serve(listener, app).with_graceful_shutdown(async move {
                stop.cancelled().await;
                tracing::info!("shutdown signal received; draining");
            });
            let server = tokio::spawn(async move { server.await });
            shutdown.cancelled().await;
            match tokio::time::timeout(grace, server).await {
                Ok(joined) => joined.context("server task panicked")??,
                Err(_) => tracing::warn!(?grace, "requests still running after the grace period"),
            }
        } else {
            drop(state);
            shutdown.cancelled().await;
            tracing::info!("shutdown signal received; draining");
        }
        let _ = workers.await;
        // Only now: agents finishing within the grace period still called the model.
        gateway.stop();
        let _ = dispatch.await;
        let _ = housekeeping.await;
        drop(data_dir_lock);
        db.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}
