//! `rdev worker`: an extra node that claims and runs builds and delivers callbacks from a
//! shared PostgreSQL, without serving the API. Stops like `serve` on SIGINT/SIGTERM.

use std::{path::Path, process::ExitCode};

use rdev_server::{telemetry, Config};
use tokio_util::sync::CancellationToken;

/// Flags of `rdev worker`.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// Database URL shared with the API node (postgres://...).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Tasks run at once on this node.
    #[arg(long, value_name = "N")]
    concurrency: Option<u32>,
}

/// Runs workers until a shutdown signal.
pub async fn run(config_file: Option<&Path>, args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(config_file)?;
    if let Some(url) = args.database_url {
        config.set_database_url(url);
    }
    if let Some(n) = args.concurrency {
        config.worker_concurrency = n;
    }
    if config.worker_concurrency == 0 {
        anyhow::bail!("a worker node needs --concurrency of at least 1");
    }
    if config.database_url.starts_with("sqlite:") {
        tracing::warn!("rdev worker on SQLite shares work only with processes on this machine; use PostgreSQL for several nodes");
    }
    telemetry::init(config.log_format);
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        crate::serve::wait_for_signal().await;
        token.cancel();
    });
    rdev_server::app::run_worker_node(config, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
