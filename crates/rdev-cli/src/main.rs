//! The `rdev` binary: parses the command line and hands off to library code. Each
//! subcommand lives in its own module; this file only dispatches and turns errors into one
//! line on stderr plus a non-zero exit.

mod serve;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

/// rdev: a build orchestrator for code agents.
#[derive(Debug, Parser)]
#[command(name = "rdev", version, about)]
struct Cli {
    /// Configuration file (default ./rdev.toml if present; also RDEV_CONFIG).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP API and the workers (SQLite at ./rdev.db unless configured otherwise).
    Serve(serve::ServeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::anyhow!("could not start the async runtime: {e}")),
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(cli.config.as_deref(), args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

/// Prints the error chain on one line and returns a failing exit code.
fn fail(e: &anyhow::Error) -> ExitCode {
    let msg = format!("{e:#}").replace('\n', " ");
    eprintln!("rdev: error: {msg}");
    ExitCode::FAILURE
}
