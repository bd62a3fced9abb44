//! The two things a node runs over its [`Services`]: the HTTP API ([`ApiServer`]) and the
//! worker side ([`WorkerNode`]: worker pool, callback dispatcher, housekeeping), each with
//! `run_until(shutdown)`. `rdev serve` runs both ([`Application`]), `rdev worker` only the
//! worker side; both start with [`Services::build`]. Tests call `Application::build` on
//! port 0 with their own database.
//!
//! It must not build services itself (that is [`crate::services`]) nor decide what a build
//! does (that is [`crate::worker`]).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use rdev_core::ProviderRegistry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    api,
    callbacks::dispatcher::Dispatcher,
    config::Config,
    housekeeping::{self, Housekeeping, HousekeepingConfig},
    services::{NodeRole, Services},
    worker::{PoolConfig, WorkerPool},
};

/// The HTTP API on a bound listener.
#[derive(Debug)]
pub struct ApiServer {
    services: Arc<Services>,
    listener: TcpListener,
}

impl ApiServer {
    /// The API over `services`, answering on `listener`.
    pub fn build(services: Arc<Services>, listener: TcpListener) -> Self {
        Self { services, listener }
    }

    /// The address the API listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` fires, then lets requests in flight finish within
    /// `shutdown_grace_secs`.
    pub async fn run_until(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let grace = Duration::from_secs(self.services.config.shutdown_grace_secs);
        let app = api::router(Arc::clone(&self.services)).merge(crate::ui::router(self.services));
        let stop = shutdown.clone();
        let server = axum::serve(self.listener, app).with_graceful_shutdown(async move {
            stop.cancelled().await;
            tracing::info!("shutdown signal received; draining");
        });
        let server = tokio::spawn(async move { server.await });
        shutdown.cancelled().await;
        match tokio::time::timeout(grace, server).await {
            Ok(joined) => joined.context("server task panicked")??,
            Err(_) => tracing::warn!(?grace, "requests still running after the grace period"),
        }
        Ok(())
    }
}

/// The worker side of a node: the pool that claims and runs tasks, the callback
/// dispatcher and the housekeeping.
#[derive(Debug)]
pub struct WorkerNode {
    services: Arc<Services>,
}

impl WorkerNode {
    /// The worker side over `services`.
    pub fn build(services: Arc<Services>) -> Self {
        Self { services }
    }

    /// Runs the workers, the callback dispatcher and the housekeeping (start-up sweep of
    /// crashed runs' leftovers, then kept checkouts, pruning and the data directory's size)
    /// until `shutdown` fires; then stops claiming, lets running tasks finish within
    /// `shutdown_grace_secs` (handing unfinished tasks back to the queue), and stops the
    /// model gateway once no agent can call it any more.
    pub async fn run_until(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let services = self.services;
        let housekeeping = Housekeeping::new(
            HousekeepingConfig::from_config(&services.config),
            services.git.clone(),
            Arc::clone(&services.registry),
            Arc::clone(&services.store),
            services.metrics.clone(),
        );
        // Before the workers start, every checkout on disk is a leftover: no attempt of this
        // node runs yet. That holds only if no other process uses the data directory.
        let data_dir = &services.config.data_dir;
        let data_dir_lock = housekeeping::lock_data_dir(data_dir);
        let leftovers = match &data_dir_lock {
            Ok(Some(_)) => Some(housekeeping.find_leftovers().await),
            Ok(None) => {
                tracing::warn!(
                    data_dir = %data_dir.display(),
                    "another rdev process uses this data directory; what crashed runs left \
                     there is not swept (give every node its own data_dir)"
                );
                None
            }
            Err(e) => {
                tracing::warn!(data_dir = %data_dir.display(), error = %e, "could not lock the data directory; nothing swept at start");
                None
            }
        };
        let pool = WorkerPool::new(
            Arc::clone(&services),
            PoolConfig::from_config(&services.config),
        );
        let workers = tokio::spawn(pool.run(shutdown.clone()));
        let housekeeping = tokio::spawn(housekeeping.run(shutdown.clone(), leftovers));
        let dispatcher = Dispatcher::new(
            Arc::clone(&services.store),
            services.secrets.clone(),
            services.config.dispatch(),
        );
        let dispatch = tokio::spawn(dispatcher.run(shutdown.clone()));
        shutdown.cancelled().await;
        let _ = workers.await;
        // Only now: agents finishing within the grace period still called the model.
        services.gateway.stop();
        let _ = dispatch.await;
        let _ = housekeeping.await;
        drop(data_dir_lock);
        Ok(())
    }
}

/// A built, not yet running, `rdev serve` node: the API and the worker side over one
/// [`Services`].
#[derive(Debug)]
pub struct Application {
    services: Arc<Services>,
    api: ApiServer,
    worker: WorkerNode,
}

impl Application {
    /// Builds the services ([`Services::build`]) and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let services = Services::build(config, NodeRole::Serve).await?;
        let listen = services.config.listen;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("could not listen on {listen}"))?;
        Ok(Self {
            api: ApiServer::build(Arc::clone(&services), listener),
            worker: WorkerNode::build(Arc::clone(&services)),
            services,
        })
    }

    /// The port the API listens on (useful with port 0).
    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// The address the API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.api
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The agents this node runs; more can be registered before `run_until_stopped`.
    pub fn registry(&self) -> Arc<ProviderRegistry> {
        Arc::clone(&self.services.registry)
    }

    /// Cancelling this token stops the node gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.services.shutdown.clone()
    }

    /// Runs the API and the worker side until the shutdown token is cancelled, lets both
    /// drain, then closes the database.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            services,
            api,
            worker,
        } = self;
        let shutdown = services.shutdown.clone();
        let (api, worker) =
            tokio::join!(api.run_until(shutdown.clone()), worker.run_until(shutdown));
        services.close().await;
        tracing::info!("stopped");
        api.and(worker)
    }
}

/// `rdev worker`: builds the services for a worker-only node and runs its worker side
/// until `shutdown` fires (or the services' own token is cancelled).
pub async fn run_worker_node(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let services = Services::build(config, NodeRole::Worker).await?;
    let own = services.shutdown.clone();
    let stop = services.shutdown.clone();
    let forward = tokio::spawn(async move {
        shutdown.cancelled().await;
        stop.cancel();
    });
    tracing::info!("rdev worker started");
    let ended = WorkerNode::build(Arc::clone(&services))
        .run_until(own)
        .await;
    forward.abort();
    services.close().await;
    tracing::info!("stopped");
    ended
}
