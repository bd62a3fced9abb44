//! `rdev project create|list|show|rm`: manage projects through a running server's API, so
//! the CLI applies exactly the server's validation.

use std::process::ExitCode;

use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Map, Value};

use crate::client::{ApiClient, ServerArgs};

/// `rdev project ...`
#[derive(Debug, clap::Args)]
pub struct ProjectArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: ProjectCommand,
}

// Parsed once per process from the command line: boxing the big variant buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum ProjectCommand {
    /// Create a project.
    Create {
        /// Project name: a slug of a-z, 0-9 and '-'.
        name: String,
        /// Git URL or path of the repository.
        #[arg(long)]
        repo_url: String,
        #[arg(long)]
        default_branch: Option<String>,
        #[arg(long)]
        template: Option<String>,
        #[arg(long)]
        woodpecker_repo_id: Option<i64>,
        /// The Woodpecker repository's full name (owner/name), instead of its id.
        #[arg(long)]
        woodpecker_repo: Option<String>,
        /// e.g. https://{project}.example.com
        #[arg(long)]
        deploy_url_pattern: Option<String>,
        #[arg(long)]
        provider: Option<String>,
        /// What a secret found in a build's commits does: block (default) or warn.
        #[arg(long, value_parser = ["block", "warn"])]
        push_protection: Option<String>,
        /// A path pattern of known test fixtures whose credential-shaped strings are not
        /// findings (e.g. 'tests/fixtures/', '*.pem'); repeatable.
        #[arg(long = "push-protection-allow", value_name = "PATTERN")]
        push_protection_allow: Vec<String>,
        /// How many builds of the project run at once (1 to 64; default 1: one after
        /// another, in submission order).
        #[arg(long)]
        max_parallel_builds: Option<u32>,
    },
    /// List projects.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one project as JSON.
    Show { name: String },
    /// Delete a project: cancel its queued and running tasks, delete its secrets and remove
    /// the repository rdev created for it (finished tasks stay as history).
    Rm { name: String },
}

/// Runs a project command.
pub async fn run(args: ProjectArgs) -> anyhow::Result<ExitCode> {
    let api = ApiClient::new(&args.server);
    match args.command {
        ProjectCommand::Create {
            name,
            repo_url,
            default_branch,
            template,
            woodpecker_repo_id,
            woodpecker_repo,
            deploy_url_pattern,
            provider,
            push_protection,
            push_protection_allow,
            max_parallel_builds,
        } => {
            let mut body = Map::new();
            body.insert("name".into(), json!(name));
            body.insert("repo_url".into(), json!(repo_url));
            for (k, v) in [
                ("default_branch", default_branch.map(Value::from)),
                ("template", template.map(Value::from)),
                ("woodpecker_repo_id", woodpecker_repo_id.map(Value::from)),
                ("woodpecker_repo", woodpecker_repo.map(Value::from)),
                ("deploy_url_pattern", deploy_url_pattern.map(Value::from)),
                ("provider", provider.map(Value::from)),
                ("push_protection", push_protection.map(Value::from)),
                ("max_parallel_builds", max_parallel_builds.map(Value::from)),
                (
                    "push_protection_allow",
                    (!push_protection_allow.is_empty()).then(|| json!(push_protection_allow)),
                ),
            ] {
                if let Some(v) = v {
                    body.insert(k.into(), v);
                }
            }
            let created = api
                .call(Method::POST, "/projects", Some(&Value::Object(body)))
                .await?;
            println!("{}", serde_json::to_string_pretty(&created)?);
        }
        ProjectCommand::List { json } => {
            let list = api.call(Method::GET, "/projects", None).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:<24} {:<10} {:<16} REPO", "NAME", "BRANCH", "TEMPLATE");
                for p in list["projects"].as_array().into_iter().flatten() {
                    println!(
                        "{:<24} {:<10} {:<16} {}",
                        p["name"].as_str().unwrap_or_default(),
                        p["default_branch"].as_str().unwrap_or_default(),
                        p["template"].as_str().unwrap_or("-"),
                        p["repo_url"].as_str().unwrap_or_default()
                    );
                }
            }
        }
        ProjectCommand::Show { name } => {
            let p = api
                .call(
                    Method::GET,
                    &format!("/projects/{}", path_segment(&name)),
                    None,
                )
                .await?;
            println!("{}", serde_json::to_string_pretty(&p)?);
        }
        ProjectCommand::Rm { name } => {
            let report = api
                .call(
                    Method::DELETE,
                    &format!("/projects/{}", path_segment(&name)),
                    None,
                )
                .await?;
            println!("deleted project {name}");
            let count = |key: &str| report[key].as_array().map_or(0, Vec::len);
            println!(
                "  cancelled tasks: {}, secrets removed: {}",
                count("cancelled_tasks"),
                count("secrets_removed")
            );
            let repo = &report["repository"];
            if let Some(outcome) = repo["outcome"].as_str() {
                let path = repo["path"].as_str().unwrap_or_default();
                let why = repo["reason"].as_str().or(repo["error"].as_str());
                match why {
                    Some(why) => println!("  repository {outcome}: {path} ({why})"),
                    None => println!("  repository {outcome}: {path}"),
                }
            }
            if repo["outcome"] == "failed" {
                eprintln!("warning: the repository could not be removed; remove it by hand");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Escapes a name for use as one URL path segment (the server validates it).
pub fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
