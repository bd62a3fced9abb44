//! `rdev template list|show|render`: reads the built-in templates embedded in this binary
//! plus any `--dir` folders, on this machine, without a server. It only prints and renders;
//! creating a project from a template is the server's job (`POST /projects`).

use std::{collections::BTreeMap, path::PathBuf, process::ExitCode};

use anyhow::Context;
use rdev_server::templates::TemplateRegistry;

/// Arguments of `rdev template`.
#[derive(Debug, clap::Args)]
pub struct TemplateArgs {
    /// Extra folders of template folders, besides the built-ins (repeatable; also
    /// RDEV_TEMPLATE_DIRS, separated by ':').
    #[arg(
        long = "dir",
        value_name = "DIR",
        global = true,
        env = "RDEV_TEMPLATE_DIRS",
        value_delimiter = ':'
    )]
    dirs: Vec<PathBuf>,
    #[command(subcommand)]
    command: TemplateCommand,
}

#[derive(Debug, clap::Subcommand)]
enum TemplateCommand {
    /// List templates: name, origin and description.
    List {
        /// Print JSON (the same shape as `GET /templates`).
        #[arg(long)]
        json: bool,
    },
    /// Show one template: its variables and files.
    Show {
        /// The template's name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Render a template into a new or empty folder (never overwrites files).
    Render {
        /// The template's name.
        name: String,
        /// The folder to write into.
        dir: PathBuf,
        /// A variable as NAME=VALUE (repeatable).
        #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
        vars: Vec<(String, String)>,
    },
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))
}

/// Runs `rdev template ...`.
pub fn run(args: TemplateArgs) -> anyhow::Result<ExitCode> {
    let registry = TemplateRegistry::load(&args.dirs).context("loading templates")?;
    match args.command {
        TemplateCommand::List { json } => {
            if json {
                let all: Vec<_> = registry.list().map(|t| t.info()).collect();
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                let width = registry.list().map(|t| t.name().len()).max().unwrap_or(0);
                for t in registry.list() {
                    println!("{:width$}  {:8}  {}", t.name(), t.origin(), t.description());
                }
            }
        }
        TemplateCommand::Show { name, json } => {
            let info = registry.get(&name)?.info();
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                println!(
                    "{} ({})\n{}\n\nvariables:",
                    info.name, info.origin, info.description
                );
                for (var, v) in &info.variables {
                    let mut rules = Vec::new();
                    if v.required {
                        rules.push("required".to_owned());
                    }
                    if let Some(d) = &v.default {
                        rules.push(format!("default {d:?}"));
                    }
                    if let Some(p) = &v.pattern {
                        rules.push(format!("pattern {p}"));
                    }
                    println!("  {var}  [{}]  {}", rules.join(", "), v.description);
                }
                println!("\nfiles:");
                for f in &info.files {
                    println!("  {f}");
                }
            }
        }
        TemplateCommand::Render { name, dir, vars } => {
            let mut map = BTreeMap::new();
            for (k, v) in vars {
                if map.insert(k.clone(), v).is_some() {
                    anyhow::bail!("variable {k:?} given twice");
                }
            }
            let tree = registry.render_into(&name, &map, &dir)?;
            println!(
                "wrote {} files of {} to {}",
                tree.files().len(),
                name,
                dir.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
