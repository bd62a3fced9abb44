//! The `rdev` binary: parses the command line and hands off to library code. Each
//! subcommand lives in its own module; this file only dispatches and turns errors into one
//! line on stderr plus a non-zero exit.

mod agent_cmd;
mod bench;
mod build_cmd;
mod client;
mod doctor_cmd;
mod follow;
mod migrate;
mod project_cmd;
mod secret_cmd;
mod serve;
mod template_cmd;
mod token_cmd;
mod worker;

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
    /// Run workers only (extra nodes sharing one PostgreSQL).
    Worker(worker::WorkerArgs),
    /// Queue a build on a running server: `rdev build PROJECT --prompt ... [--follow]`.
    Build(build_cmd::BuildArgs),
    /// Tasks on a running server: `rdev task list|show|logs|cancel|retry`.
    Task(build_cmd::TaskArgs),
    /// Bring the database schema up to date.
    Migrate(migrate::MigrateArgs),
    /// Projects on a running server: `rdev project create|list|show|rm`.
    Project(project_cmd::ProjectArgs),
    /// Benchmarks: `rdev bench queue --database-url URL --jobs N --workers W [--batch B]`.
    Bench(bench::BenchArgs),
    /// Run one code agent directly: `rdev agent run --provider claude-code --workdir DIR PROMPT|-`.
    Agent(agent_cmd::AgentArgs),
    /// Templates: `rdev template list|show NAME|render NAME DIR --var K=V`.
    Template(template_cmd::TemplateArgs),
    /// Secrets: `rdev secret set SCOPE NAME < value | list [SCOPE] | rm SCOPE NAME | rotate-key`.
    Secret(secret_cmd::SecretArgs),
    /// API tokens: `rdev token create NAME --scope build [--project P] | list | revoke NAME`.
    Token(token_cmd::TokenArgs),
    /// Check the set-up (git, agent CLIs, sandbox, model credentials, database, data
    /// directory, Woodpecker, API tokens): one line per check with the fix; exit 0 when
    /// nothing is an error. Run it first when something does not work.
    Doctor(doctor_cmd::DoctorArgs),
}

fn main() -> ExitCode {
    // `rdev sandbox-relay` runs inside an agent's sandbox as the parent of the agent: it
    // gets no configuration, no clap parsing and no multi-threaded runtime (see
    // rdev_agents::sandbox::relay).
    let mut args = std::env::args_os().skip(1);
    if args
        .next()
        .is_some_and(|a| a == rdev_agents::sandbox::relay::SUBCOMMAND)
    {
        return rdev_agents::sandbox::relay::main(args);
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::anyhow!("could not start the async runtime: {e}")),
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(cli.config.as_deref(), args).await,
            Command::Worker(args) => worker::run(cli.config.as_deref(), args).await,
            Command::Build(args) => build_cmd::build(args).await,
            Command::Task(args) => build_cmd::task(args).await,
            Command::Migrate(args) => migrate::run(cli.config.as_deref(), args).await,
            Command::Project(args) => project_cmd::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Agent(args) => agent_cmd::run(cli.config.as_deref(), args).await,
            Command::Template(args) => template_cmd::run(args),
            Command::Secret(args) => secret_cmd::run(cli.config.as_deref(), args).await,
            Command::Token(args) => token_cmd::run(cli.config.as_deref(), args).await,
            Command::Doctor(args) => doctor_cmd::run(cli.config.as_deref(), args).await,
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
