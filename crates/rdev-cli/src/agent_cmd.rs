//! `rdev agent run`: runs one code agent directly in a directory, without the queue, and
//! prints its events (JSON lines with `--json`, readable lines otherwise). Exit status 0
//! means the agent reported success; anything else ends with a one-line reason. Adapters
//! are built by `rdev_server::agent_setup::build_agent`, as `rdev serve` builds them. It never prints configuration
//! or environment values: event text arrives already redacted by the adapter.

use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use rdev_core::{AgentEvent, AgentProvider, AgentRequest, AgentStatus, CodeAgent, RequestLimits};
use rdev_server::gateway::{Gateway, GrantSpec};

/// `rdev agent ...`
#[derive(Debug, Args)]
pub struct AgentArgs {
    #[command(subcommand)]
    command: AgentCommand,
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Run one agent in a directory and print its events.
    Run(RunArgs),
}

/// `rdev agent run --provider P --workdir DIR [--model M] [--timeout SECS] [--resume ID]
/// [--json] PROMPT|-`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The agent provider.
    #[arg(long, default_value = AgentProvider::CLAUDE_CODE)]
    provider: String,
    /// The directory the agent works in.
    #[arg(long, value_name = "DIR")]
    workdir: PathBuf,
    /// Model name passed to the provider.
    #[arg(long)]
    model: Option<String>,
    /// Give up after this many seconds (the run ends as timed out).
    #[arg(long, value_name = "SECS", default_value_t = 1800)]
    timeout: u64,
    /// Continue this earlier session.
    #[arg(long, value_name = "SESSION_ID")]
    resume: Option<String>,
    /// Stop after this many agent turns.
    #[arg(long)]
    max_turns: Option<u32>,
    /// Print events as JSON lines.
    #[arg(long)]
    json: bool,
    /// The prompt, or `-` to read it from stdin.
    prompt: String,
}

/// Runs `rdev agent ...`.
pub async fn run(config_file: Option<&Path>, args: AgentArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        AgentCommand::Run(args) => run_agent(config_file, args).await,
    }
}

/// The adapter for `provider`, from the same configuration `rdev serve` reads
/// ([agents.claude_code], [agents.opencode]), with its model calls going through `gateway`
/// as they do under `rdev serve`.
pub fn build_agent(
    config_file: Option<&Path>,
    provider: &str,
    gateway: Option<&Gateway>,
) -> anyhow::Result<Arc<dyn CodeAgent>> {
    let mut config = rdev_server::Config::load(config_file)?;
    config.agents.gateway = gateway.map(Gateway::link);
    Ok(rdev_server::agent_setup::build_agent(
        &config,
        provider,
        &tokio_util::sync::CancellationToken::new(),
    )?)
}

/// An in-process gateway for one run: the upstream key stays in this process, the agent
/// gets a token (docs/gateway.md). No store: usage is not recorded. The credential store is
/// opened only when an upstream's key is in it (`api_key_secret`).
async fn start_gateway(config_file: Option<&Path>) -> anyhow::Result<Gateway> {
    let config = rdev_server::Config::load(config_file)?;
    let settings = config.gateway_settings()?;
    let secrets = if settings
        .upstreams
        .iter()
        .any(|u| u.api_key_secret.is_some())
    {
        let db = rdev_server::services::open_database(&config.database_url).await?;
        let secrets = rdev_server::secrets::SecretService::from_config(&config, db)?;
        secrets.verify_key().await?;
        Some(Arc::new(secrets))
    } else {
        None
    };
    Gateway::start(
        settings,
        None,
        rdev_server::metrics::Metrics::default(),
        secrets,
    )
    .await
}

async fn run_agent(config_file: Option<&Path>, args: RunArgs) -> anyhow::Result<ExitCode> {
    let prompt = if args.prompt == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the prompt from stdin")?;
        s
    } else {
        args.prompt
    };
    if !args.workdir.is_dir() {
        bail!("workdir {} is not a directory", args.workdir.display());
    }
    let mut request = AgentRequest::new(prompt, &args.workdir, Duration::from_secs(args.timeout));
    request.model = args.model;
    request.session_id = args.resume;
    request.max_turns = args.max_turns;
    request.validate(&RequestLimits::default())?;
    let gateway = start_gateway(config_file).await?;
    let agent = build_agent(config_file, &args.provider, Some(&gateway))?;
    let grant = gateway.grant(GrantSpec {
        provider: args.provider.clone(),
        budget: gateway.cap(),
        ..GrantSpec::default()
    });
    request.model_grant = Some(grant.model_grant());

    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    let json = args.json;
    let printer = tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            let line = if json {
                serde_json::to_string(&event)
                    .unwrap_or_else(|e| format!("{{\"type\":\"error\",\"message\":\"{e}\"}}"))
            } else {
                describe(&event)
            };
            // A closed stdout (`| head`) must not stop the run; the result still decides the exit.
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    });
    let run_id = request.run_id;
    let run = agent.execute(request, tx);
    tokio::pin!(run);
    let result = tokio::select! {
        r = &mut run => r,
        _ = tokio::signal::ctrl_c() => {
            agent.cancel(run_id).await?;
            run.await
        }
    };
    let _ = printer.await;
    let result = result?;
    match result.status {
        AgentStatus::Success => Ok(ExitCode::SUCCESS),
        status => bail!(
            "agent run {}: {}",
            status_name(status),
            first_line(&result.output)
        ),
    }
}

fn status_name(status: AgentStatus) -> &'static str {
    match status {
        AgentStatus::Success => "succeeded",
        AgentStatus::Failed => "failed",
        AgentStatus::Cancelled => "was cancelled",
        AgentStatus::TimedOut => "timed out",
    }
}

fn first_line(s: &str) -> String {
    let line = s
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("(no reason given)");
    clip(line, 300)
}

/// At most `max` characters of `s` on one line, with an ellipsis when cut.
fn clip(s: &str, max: usize) -> String {
    let flat = s.replace('\n', "⏎");
    match flat.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &flat[..i]),
        None => flat,
    }
}

/// One readable line per event.
fn describe(event: &AgentEvent) -> String {
    match event {
        AgentEvent::Started {
            session_id,
            model,
            tools,
        } => format!(
            "started session={} model={} tools={}",
            session_id.as_deref().unwrap_or("-"),
            model.as_deref().unwrap_or("-"),
            tools.len()
        ),
        AgentEvent::Message { role, text } => format!("{role}: {}", clip(text, 2000)),
        AgentEvent::ToolUse { name, input, .. } => {
            format!("tool {name} {}", clip(&input.to_string(), 300))
        }
        AgentEvent::ToolResult {
            output, is_error, ..
        } => format!(
            "tool result{}: {} ({} bytes)",
            if *is_error { " (error)" } else { "" },
            clip(output, 200),
            output.len()
        ),
        AgentEvent::Usage(u) => {
            format!("usage input={} output={}", u.input_tokens, u.output_tokens)
        }
        AgentEvent::Error { message } => format!("error: {}", clip(message, 500)),
        AgentEvent::Raw { value } => format!(
            "event {}",
            value
                .get("type")
                .and_then(|t| t.as_str())
                .unwrap_or("(untyped)")
        ),
        AgentEvent::Completed(r) => format!(
            "completed {:?} in {:.1}s, {} turns, cost {}, session {}",
            r.status,
            r.duration.as_secs_f64(),
            r.num_turns,
            r.cost_usd
                .map_or_else(|| "-".to_owned(), |c| format!("${c:.4}")),
            r.session_id.as_deref().unwrap_or("-")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_cuts_on_char_boundaries_and_flattens_lines() {
        assert_eq!(clip("ab\ncd", 10), "ab⏎cd");
        assert_eq!(clip("ééééé", 3), "ééé…");
    }

    #[test]
    fn unknown_provider_is_a_clear_error() {
        let err = build_agent(None, "nope", None).expect_err("unknown provider");
        assert!(
            err.to_string().contains("unknown provider \"nope\""),
            "{err}"
        );
    }
}
