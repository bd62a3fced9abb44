//! `rdev token create|list|revoke`: API tokens from the command line, on the same database
//! as `rdev serve`. Like `rdev secret` it talks to the database, not to a running server,
//! so the first token can be made before the API accepts any. A new token is printed once
//! on stdout (nothing else is, so `TOKEN=$(rdev token create ...)` works); only its
//! SHA-256 is stored, and no command prints a token again.

use std::{path::Path, process::ExitCode};

use anyhow::Context;
use rdev_core::{ApiToken, ProjectName, ProjectStore, StoreError, TokenName, TokenScope};
use rdev_server::{tokens::TokenService, Config};
use rdev_store::{Db, SqlStore, SqlTokenStore, StoreConfig};

/// `rdev token ...`.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// Database URL (default from rdev.toml / RDEV_DATABASE_URL, else sqlite:rdev.db).
    #[arg(long, global = true, value_name = "URL")]
    database_url: Option<String>,
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, clap::Subcommand)]
enum TokenCommand {
    /// Create a token and print it once.
    Create {
        /// `[a-z0-9._-]`, e.g. chat-bot.
        name: String,
        /// `build` (queue builds, read and cancel tasks), `read` (every GET), or `admin`.
        #[arg(long, value_parser = parse_scope)]
        scope: TokenScope,
        /// Limit the token to this project (repeat for several); not for admin tokens.
        #[arg(long = "project", value_name = "P")]
        projects: Vec<String>,
    },
    /// List tokens (metadata only: name, scope, projects, created, last used).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: requests with it are refused (401) from now on.
    Revoke { name: String },
}

fn parse_scope(s: &str) -> Result<TokenScope, String> {
    s.parse()
        .map_err(|e: rdev_core::ValidationError| e.to_string())
}

/// Runs a `token` subcommand.
pub async fn run(config_file: Option<&Path>, args: TokenArgs) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(config_file)?;
    if let Some(url) = args.database_url {
        config.database_url = url;
    }
    let db = rdev_server::services::open_database(&config.database_url).await?;
    let result = dispatch(&db, args.command).await;
    db.close().await;
    result
}

async fn dispatch(db: &Db, command: TokenCommand) -> anyhow::Result<ExitCode> {
    let service = TokenService::new(std::sync::Arc::new(SqlTokenStore::new(db.clone())));
    match command {
        TokenCommand::Create {
            name,
            scope,
            projects,
        } => {
            let name = TokenName::parse(&name)?;
            let projects = existing_projects(db, &projects).await?;
            let (token, secret) = service.create(name, scope, projects).await?;
            println!("{}", secret.expose());
            eprintln!(
                "created token {} (scope {}, projects {}); it is shown only now, so store it",
                token.name,
                token.scope,
                projects_text(&token)
            );
        }
        TokenCommand::List { json } => {
            let tokens = service.list().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
            } else {
                print_table(&tokens);
            }
        }
        TokenCommand::Revoke { name } => {
            let name = TokenName::parse(&name)?;
            service.revoke(&name).await?;
            eprintln!("revoked token {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Parses `names` and checks each project exists: a token limited to a name nobody has
/// created yet would reach whatever project is created under it later.
async fn existing_projects(db: &Db, names: &[String]) -> anyhow::Result<Vec<ProjectName>> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let store = SqlStore::new(
        db.clone(),
        StoreConfig {
            listen: false,
            ..StoreConfig::default()
        },
    )
    .await
    .context("could not open the store")?;
    let mut projects = Vec::new();
    for name in names {
        let project = ProjectName::parse(name)?;
        match store.get_project(&project).await {
            Ok(_) => projects.push(project),
            Err(StoreError::NotFound { .. }) => {
                anyhow::bail!("project {project} does not exist; create it first")
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(projects)
}

fn projects_text(t: &ApiToken) -> String {
    if t.projects.is_empty() {
        return "all".to_owned();
    }
    t.projects
        .iter()
        .map(ProjectName::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

fn print_table(tokens: &[ApiToken]) {
    const TIME: &str = "%Y-%m-%dT%H:%M:%SZ";
    println!(
        "{:<24} {:<6} {:<32} {:<20}  LAST USED",
        "NAME", "SCOPE", "PROJECTS", "CREATED"
    );
    for t in tokens {
        println!(
            "{:<24} {:<6} {:<32} {:<20}  {}",
            t.name.as_str(),
            t.scope.as_str(),
            projects_text(t),
            t.created_at.format(TIME).to_string(),
            t.last_used_at
                .map(|at| at.format(TIME).to_string())
                .unwrap_or_else(|| "never".to_owned())
        );
    }
}
