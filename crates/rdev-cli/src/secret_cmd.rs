//! `rdev secret set|list|rm|rotate-key|audit`: the credential store from the command line,
//! on the same database and master key as `rdev serve`. Values come from stdin or a file,
//! never from argv (where `ps` and shell history would show them), and are never printed.

use std::{
    io::{IsTerminal, Read},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context;
use rdev_core::{AuditFilter, SecretMeta, SecretName, SecretScope, SecretString};
use rdev_server::{
    secrets::{KeySource, MasterKey, SecretService},
    Config,
};

/// `rdev secret ...`.
#[derive(Debug, clap::Args)]
pub struct SecretArgs {
    /// Database URL (default from rdev.toml / RDEV_DATABASE_URL, else sqlite:rdev.db).
    #[arg(long, global = true, value_name = "URL")]
    database_url: Option<String>,
    #[command(subcommand)]
    command: SecretCommand,
}

#[derive(Debug, clap::Subcommand)]
enum SecretCommand {
    /// Store a new version of SCOPE/NAME; the value is read from stdin or --from-file.
    Set {
        /// `global`, `project:<name>`, or `gateway` (the model gateway's upstream keys).
        scope: String,
        /// `[A-Za-z_][A-Za-z0-9_]*`, e.g. GITHUB_TOKEN.
        name: String,
        /// Read the value from this file instead of stdin.
        #[arg(long, value_name = "FILE")]
        from_file: Option<PathBuf>,
    },
    /// List secrets (metadata only: name, version, created, last used).
    List {
        /// Only this scope.
        scope: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete every version of SCOPE/NAME.
    Rm { scope: String, name: String },
    /// Re-encrypt every secret under a new master key, in one transaction.
    RotateKey {
        /// Read the new key (base64 of 32 bytes) from stdin instead of generating one.
        #[arg(long)]
        new_key_stdin: bool,
    },
    /// Show the audit log, newest first.
    Audit {
        scope: Option<String>,
        name: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

/// Runs a `secret` subcommand.
pub async fn run(config_file: Option<&Path>, args: SecretArgs) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(config_file)?;
    if let Some(url) = args.database_url {
        config.set_database_url(url);
    }
    let db = rdev_server::services::open_database(&config.database_url).await?;
    let service = SecretService::from_config(&config, db.clone())?;
    service.verify_key().await?;
    let actor = format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned())
    );
    let result = dispatch(&service, args.command, &actor).await;
    db.close().await;
    result
}

async fn dispatch(
    service: &SecretService,
    command: SecretCommand,
    actor: &str,
) -> anyhow::Result<ExitCode> {
    match command {
        SecretCommand::Set {
            scope,
            name,
            from_file,
        } => {
            let (scope, name) = (SecretScope::parse(&scope)?, SecretName::parse(&name)?);
            let value = read_value(from_file.as_deref())?;
            let meta = service.set(&scope, &name, &value, actor).await?;
            eprintln!(
                "stored {}/{} version {}",
                meta.scope, meta.name, meta.version
            );
        }
        SecretCommand::List { scope, json } => {
            let scope = scope.as_deref().map(SecretScope::parse).transpose()?;
            let metas = service.list(scope.as_ref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&metas)?);
            } else {
                print_table(&metas);
            }
        }
        SecretCommand::Rm { scope, name } => {
            let (scope, name) = (SecretScope::parse(&scope)?, SecretName::parse(&name)?);
            let n = service.remove(&scope, &name, actor).await?;
            eprintln!("deleted {scope}/{name} ({n} versions)");
        }
        SecretCommand::RotateKey { new_key_stdin } => {
            let new_key = if new_key_stdin {
                let text = read_stdin("the new master key (base64)")?;
                MasterKey::from_base64(text.expose(), "stdin")?
            } else if *service.key_source() == KeySource::Env {
                anyhow::bail!(
                    "the master key comes from RDEV_MASTER_KEY, so rdev cannot store a new one: \
                     pass the new key on stdin with --new-key-stdin, then update RDEV_MASTER_KEY"
                );
            } else {
                MasterKey::generate()
            };
            let report = service.rotate_key(new_key, actor).await?;
            eprintln!("re-encrypted {} secret versions", report.rotated);
            match service.key_source() {
                KeySource::File(path) => eprintln!("new master key written to {}", path.display()),
                KeySource::Env => {
                    eprintln!("set RDEV_MASTER_KEY to the new key before starting rdev again")
                }
            }
        }
        SecretCommand::Audit { scope, name, limit } => {
            let filter = AuditFilter {
                scope: scope.as_deref().map(SecretScope::parse).transpose()?,
                name: name.as_deref().map(SecretName::parse).transpose()?,
                limit,
            };
            for e in service.audit_log(&filter).await? {
                let version = e
                    .version
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "*".into());
                println!(
                    "{}  {:<6}  {}/{} v{}  by {}{}",
                    e.at.format("%Y-%m-%dT%H:%M:%SZ"),
                    e.action.as_str(),
                    e.scope,
                    e.name,
                    version,
                    e.actor,
                    e.detail.map(|d| format!("  ({d})")).unwrap_or_default()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The value from `file`, or stdin; one trailing newline is dropped (what `echo` adds).
fn read_value(file: Option<&Path>) -> anyhow::Result<SecretString> {
    let text = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("could not read {}", path.display()))?;
            SecretString::new(text)
        }
        None => read_stdin("the secret value")?,
    };
    let v = text.expose();
    let trimmed = v
        .strip_suffix("\r\n")
        .or_else(|| v.strip_suffix('\n'))
        .unwrap_or(v);
    Ok(SecretString::new(trimmed))
}

fn read_stdin(what: &str) -> anyhow::Result<SecretString> {
    let mut stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("reading {what} from stdin; end with Ctrl-D");
    }
    let mut text = String::new();
    stdin
        .read_to_string(&mut text)
        .context("could not read stdin")?;
    // Returned as read: a value's own whitespace is kept (the caller strips one trailing
    // newline), and MasterKey::from_base64 trims a key itself.
    Ok(SecretString::new(text))
}

fn print_table(metas: &[SecretMeta]) {
    println!(
        "{:<28} {:<32} {:>7}  {:<20}  LAST USED",
        "SCOPE", "NAME", "VERSION", "CREATED"
    );
    for m in metas {
        println!(
            "{:<28} {:<32} {:>7}  {:<20}  {}",
            m.scope.to_string(),
            m.name.as_str(),
            m.version,
            m.created_at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            m.last_used_at
                .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                .unwrap_or_else(|| "never".to_owned())
        );
    }
}
