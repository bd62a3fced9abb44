//! `rdev doctor [--json] [--offline]`: checks the set-up `rdev serve` would run with (same
//! configuration file and environment) and prints one line per check, `ok`, `warning` or
//! `error`, with the fix for anything not ok (`rdev_server::doctor`). Exits 0 when no check
//! is an error. It changes nothing and prints no credential.

use std::{path::Path, process::ExitCode};

use rdev_server::{doctor, Config};

/// Flags of `rdev doctor`.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Print the report as JSON (`{"checks":[{"status","check","detail","fix"?}],"errors",
    /// "warnings","offline"}`).
    #[arg(long)]
    json: bool,
    /// Make no network call (model endpoints, Woodpecker); the database is still opened.
    #[arg(long)]
    offline: bool,
    /// Database URL to check instead of the configured one.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
}

/// Runs the checks and prints the report.
pub async fn run(config_file: Option<&Path>, args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(config_file)?;
    if let Some(url) = args.database_url {
        config.set_database_url(url);
    }
    let report = doctor::run(
        &config,
        doctor::Options {
            offline: args.offline,
        },
    )
    .await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
