//! [`Services`]: the composition root. Everything a node shares (database, store,
//! templates, git workspaces, credential store, API tokens, agents, metrics, the model
//! gateway, CI settings and the table of attempts running here) is built once, by
//! [`Services::build`], from a [`Config`]; the API (`AppState` is `Arc<Services>`) and the
//! worker node both read it. Both `rdev serve` and `rdev worker` start here, so a setting
//! or a check added to start-up holds for every kind of node.
//!
//! It must not start anything that runs on its own (servers, pools, dispatchers): that is
//! [`crate::app`]'s job. The only long-lived piece it starts is the gateway, because agents
//! are configured with its address.

use std::sync::Arc;

use anyhow::Context;
use rdev_core::{ProviderRegistry, Store};
use rdev_store::{Db, SqlStore, SqlTokenStore, StoreConfig};
use tokio_util::sync::CancellationToken;

use crate::{
    agent_setup::build_registry,
    config::Config,
    doctor::readiness::Readiness,
    gateway::Gateway,
    git::GitWorkspaces,
    live::Live,
    metrics::Metrics,
    running::RunningTasks,
    secrets::SecretService,
    templates::TemplateRegistry,
    tokens::{check_exposure, TokenService},
    woodpecker::CiFollow,
};

/// What a node is for: the API with workers (`rdev serve`) or workers only (`rdev worker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRole {
    /// Serves the API (and runs workers unless `worker_concurrency` is 0).
    Serve,
    /// Runs workers and delivers callbacks; no API.
    Worker,
}

/// Everything a node shares; built once per process.
#[derive(Debug)]
pub struct Services {
    pub db: Db,
    pub store: Arc<dyn Store>,
    pub templates: Arc<TemplateRegistry>,
    pub git: GitWorkspaces,
    /// The code agents this node can run.
    pub registry: Arc<ProviderRegistry>,
    /// Whether each provider can take a build (`GET /agents`, `/readyz`).
    pub readiness: Readiness,
    /// The attempts running in this process, with the tokens that stop them.
    pub running: RunningTasks,
    /// Prometheus metrics.
    pub metrics: Metrics,
    pub config: Arc<Config>,
    /// The credential store (SPEC 5).
    pub secrets: Arc<SecretService>,
    /// API tokens: who may call the API and for what.
    pub tokens: TokenService,
    /// How builds follow Woodpecker, when configured.
    pub woodpecker: Option<CiFollow>,
    /// The model gateway every agent's model calls go through.
    pub gateway: Gateway,
    /// Cancelled when the node shuts down (agents' supervised servers watch it).
    pub shutdown: CancellationToken,
    /// Live feeds (task events, list changes): one poll per watched thing, fanned out.
    pub live: Live,
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

impl Services {
    /// Connects the database, runs migrations, checks the API's exposure (API nodes),
    /// starts the gateway, loads templates and the master key, and sets up the agents.
    pub async fn build(mut config: Config, role: NodeRole) -> anyhow::Result<Arc<Self>> {
        let db = open_database(&config.database_url).await?;
        let tokens = TokenService::from_config(&config, Arc::new(SqlTokenStore::new(db.clone())));
        if role == NodeRole::Serve {
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
        // Before the gateway, which reads upstream keys kept in the credential store.
        let secrets = SecretService::from_config(&config, db.clone())
            .context("could not load the master key for the credential store")?;
        secrets
            .verify_key()
            .await
            .context("the master key does not open this database's secrets")?;
        let secrets = Arc::new(secrets);
        let settings = config.gateway_settings()?;
        let gateway = Gateway::start(
            settings,
            Some(store.clone()),
            metrics.clone(),
            Some(Arc::clone(&secrets)),
        )
        .await?;
        config.agents.gateway = Some(gateway.link());
        let templates = TemplateRegistry::load(&config.template_dirs)
            .context("could not load the project templates")?;
        config.log_startup(secrets.key_source());
        let shutdown = CancellationToken::new();
        let (registry, readiness) = build_registry(&config, &shutdown)?;
        readiness.log(&config, &registry).await;
        let woodpecker = config
            .woodpecker
            .as_ref()
            .map(CiFollow::from_config)
            .transpose()
            .context("invalid woodpecker configuration")?;
        let live = Live::new(store.clone());
        Ok(Arc::new(Self {
            db,
            store,
            templates: Arc::new(templates),
            git: GitWorkspaces::new(config.data_dir.join("git"))
                .with_spare_limit(config.git_spare_checkouts)
                .with_timeout(std::time::Duration::from_secs(
                    config.git_timeout_secs.max(1),
                )),
            registry: Arc::new(registry),
            readiness,
            running: RunningTasks::default(),
            metrics,
            config: Arc::new(config),
            secrets,
            tokens,
            woodpecker,
            gateway,
            shutdown,
            live,
        }))
    }

    /// Closes the database once every user of it has stopped.
    pub async fn close(&self) {
        self.db.close().await;
    }
}
