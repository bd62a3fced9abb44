//! [`Application`]: builds every piece from a [`Config`] (database, migrations, router) and
//! runs them until a shutdown token fires. Tests call `Application::build` on port 0 with
//! their own database; `rdev serve` does the same with the user's config.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use rdev_store::Db;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    api::{self, AppState},
    config::Config,
};

/// A built, not yet running, rdev server.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
}

impl Application {
    /// Connects the database, runs migrations and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let db = Db::connect(&config.database_url).await.with_context(|| {
            format!(
                "could not open database {}",
                rdev_store::db::redact_url(&config.database_url)
            )
        })?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("could not listen on {}", config.listen))?;
        Ok(Self {
            listener,
            state: AppState {
                db,
                config: Arc::new(config),
            },
            shutdown: CancellationToken::new(),
        })
    }

    /// The port the API listens on (useful with port 0).
    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// The address the API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Cancelling this token stops the server gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the shutdown token is cancelled, then lets in-flight requests finish
    /// (bounded by `shutdown_grace_secs`) and closes the database.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            listener,
            state,
            shutdown,
        } = self;
        let grace = Duration::from_secs(state.config.shutdown_grace_secs);
        let db = state.db.clone();
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
        db.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}
