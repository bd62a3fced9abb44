//! `rdev migrate`: bring the configured database's schema up to date and exit. `serve`
//! does the same at start; this command lets operators run it first, once, on Postgres.

use std::{path::Path, process::ExitCode};

use rdev_server::Config;
use rdev_store::db::redact_url;

/// Flags of `rdev migrate`.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// Database URL (default from configuration: sqlite:rdev.db).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
}

/// Runs the migrations.
pub async fn run(config_file: Option<&Path>, args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_file)?;
    let url = args.database_url.unwrap_or(config.database_url);
    let db = rdev_server::services::open_database(&url).await?;
    db.close().await;
    println!("database {} is up to date", redact_url(&url));
    Ok(ExitCode::SUCCESS)
}
