//! `rdev serve`: load configuration, build the application and run it until SIGINT or
//! SIGTERM, then shut down gracefully.

use std::{net::SocketAddr, path::Path, process::ExitCode};

use rdev_server::{telemetry, Application, Config};

/// Flags of `rdev serve`; they override the configuration file and environment.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Database URL: sqlite:PATH (default sqlite:rdev.db) or postgres://...
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
}

/// Runs the server until a shutdown signal.
pub async fn run(config_file: Option<&Path>, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(config_file)?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(url) = args.database_url {
        config.set_database_url(url);
    }
    telemetry::init(config.log_format);
    let app = Application::build(config).await?;
    let token = app.shutdown_token();
    tracing::info!(addr = %app.local_addr(), "rdev listening");
    tokio::spawn(async move {
        wait_for_signal().await;
        token.cancel();
    });
    app.run_until_stopped().await?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
