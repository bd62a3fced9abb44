//! `rdev build` and `rdev task list|show|logs|cancel|retry`: clients of a running server. `build
//! --follow` and `task logs --follow` print the task's events as they happen, as a CI log
//! (`follow`) or with `--json` as JSON lines, and exit with the task's outcome (0
//! completed, 1 otherwise).

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use reqwest::Method;
use serde_json::{json, Map, Value};

use crate::{
    client::{ApiClient, ServerArgs},
    follow::{CiLog, FinishedTask, StoredEvent},
};

/// `rdev build PROJECT --prompt ...`
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The project to build.
    project: String,
    /// What the agent should do; `-` reads it from stdin.
    #[arg(long)]
    prompt: String,
    /// Template to render when the repository is empty.
    #[arg(long)]
    template: Option<String>,
    /// Template variable, `KEY=VALUE` (repeatable).
    #[arg(long = "var", value_name = "KEY=VALUE")]
    vars: Vec<String>,
    /// Commit, push and follow CI.
    #[arg(long)]
    auto_deploy: bool,
    /// Where the signed result is POSTed.
    #[arg(long)]
    callback_url: Option<String>,
    /// Agent provider (default: the project's, then the server's default).
    #[arg(long)]
    provider: Option<String>,
    #[arg(long)]
    model: Option<String>,
    /// Agent timeout in seconds.
    #[arg(long)]
    timeout: Option<u64>,
    /// Resume this agent session.
    #[arg(long)]
    session_id: Option<String>,
    /// Idempotency key: a repeat returns the same task.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Print progress until the task ends, and exit with its outcome.
    #[arg(long)]
    follow: bool,
    /// Machine-readable output: the server's answer, or with --follow one JSON object per
    /// event (`{"event","data"}`).
    #[arg(long)]
    json: bool,
}

/// `rdev task ...`
#[derive(Debug, clap::Args)]
pub struct TaskArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: TaskCommand,
}

#[derive(Debug, Subcommand)]
enum TaskCommand {
    /// List tasks, newest first.
    List {
        #[arg(long)]
        project: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one task as JSON (attempts and callback deliveries included).
    Show { id: String },
    /// Print a task's events; with --follow, until it ends.
    Logs {
        id: String,
        #[arg(long)]
        follow: bool,
        /// Print raw JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a queued or running task (the agent is stopped; nothing is pushed).
    Cancel { id: String },
    /// Queue a new task with the spec of a failed or cancelled one; prints the new id.
    Retry { id: String },
}

/// Runs `rdev build`.
pub async fn build(args: BuildArgs) -> anyhow::Result<ExitCode> {
    let api = ApiClient::new(&args.server);
    let prompt = if args.prompt == "-" {
        std::io::read_to_string(std::io::stdin()).context("could not read the prompt from stdin")?
    } else {
        args.prompt
    };
    let mut variables = Map::new();
    for kv in &args.vars {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--var {kv:?} is not KEY=VALUE"))?;
        variables.insert(k.to_owned(), json!(v));
    }
    let mut body =
        json!({"prompt": prompt, "auto_deploy": args.auto_deploy, "variables": variables});
    for (k, v) in [
        ("template", args.template),
        ("callback_url", args.callback_url),
        ("provider", args.provider),
        ("model", args.model),
        ("session_id", args.session_id),
    ] {
        if let Some(v) = v {
            body[k] = json!(v);
        }
    }
    if let Some(t) = args.timeout {
        body["timeout_secs"] = json!(t);
    }
    let path = format!(
        "/project/{}/build",
        crate::project_cmd::path_segment(&args.project)
    );
    let answer = api
        .call_with(
            Method::POST,
            &path,
            Some(&body),
            args.idempotency_key.as_deref(),
        )
        .await?;
    let id = answer["task_id"]
        .as_str()
        .context("the server answered without a task id")?
        .to_owned();
    if !args.follow {
        if args.json {
            println!("{answer}");
        } else {
            println!("{id}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("task {id} queued");
    follow_stream(&api, &id, args.json, true).await
}

/// Runs `rdev task ...`.
pub async fn task(args: TaskArgs) -> anyhow::Result<ExitCode> {
    let api = ApiClient::new(&args.server);
    match args.command {
        TaskCommand::List {
            project,
            status,
            json,
        } => {
            let mut q = Vec::new();
            if let Some(p) = project {
                q.push(format!("project={}", crate::project_cmd::path_segment(&p)));
            }
            if let Some(s) = status {
                q.push(format!("status={}", crate::project_cmd::path_segment(&s)));
            }
            let path = if q.is_empty() {
                "/tasks".to_owned()
            } else {
                format!("/tasks?{}", q.join("&"))
            };
            let list = api.call(Method::GET, &path, None).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:<36}  {:<20} {:<10} {:<7} CREATED",
                    "ID", "PROJECT", "STATUS", "ATTEMPT"
                );
                for t in list["tasks"].as_array().into_iter().flatten() {
                    println!(
                        "{:<36}  {:<20} {:<10} {:<7} {}",
                        t["id"].as_str().unwrap_or_default(),
                        t["project"].as_str().unwrap_or_default(),
                        t["status"].as_str().unwrap_or_default(),
                        t["attempt"],
                        t["created_at"].as_str().unwrap_or_default()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        TaskCommand::Show { id } => {
            let t = api
                .call(
                    Method::GET,
                    &format!("/tasks/{}", crate::project_cmd::path_segment(&id)),
                    None,
                )
                .await?;
            println!("{}", serde_json::to_string_pretty(&t)?);
            Ok(ExitCode::SUCCESS)
        }
        TaskCommand::Logs {
            id,
            follow: live,
            json,
        } => {
            // With --follow, until the task ends; without, what is stored so far (the
            // stream ends at once for a finished task; for a running one we stop after
            // replaying).
            follow_stream(&api, &id, json, live).await
        }
        TaskCommand::Cancel { id } => {
            let t = api
                .call(
                    Method::POST,
                    &format!("/tasks/{}/cancel", crate::project_cmd::path_segment(&id)),
                    None,
                )
                .await?;
            println!("task {} is {}", id, t["status"].as_str().unwrap_or("?"));
            Ok(ExitCode::SUCCESS)
        }
        TaskCommand::Retry { id } => {
            let t = api
                .call(
                    Method::POST,
                    &format!("/tasks/{}/retry", crate::project_cmd::path_segment(&id)),
                    None,
                )
                .await?;
            println!(
                "task {} retries {} ({})",
                t["task_id"].as_str().unwrap_or("?"),
                id,
                t["status"].as_str().unwrap_or("?")
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Streams `/tasks/{id}/events`. With `live`, waits for the `end` event and returns the
/// task's outcome; otherwise stops after the stored events.
async fn follow_stream(
    api: &ApiClient,
    id: &str,
    json: bool,
    live: bool,
) -> anyhow::Result<ExitCode> {
    let path = format!("/tasks/{}/events", crate::project_cmd::path_segment(id));
    let resp = api.stream(&path).await?;
    let mut events = resp.bytes_stream().eventsource();
    let mut log = CiLog::new(id);
    loop {
        let next = if live {
            events.next().await
        } else {
            // The stored events arrive at once; a quiet stream means the replay is over.
            match tokio::time::timeout(std::time::Duration::from_millis(700), events.next()).await {
                Ok(n) => n,
                Err(_) => return Ok(ExitCode::SUCCESS),
            }
        };
        let Some(ev) = next else {
            anyhow::bail!("the event stream ended before the task finished");
        };
        let ev = ev.context("the event stream broke")?;
        let data: Value = serde_json::from_str(&ev.data).unwrap_or(Value::String(ev.data.clone()));
        if json {
            println!("{}", json!({"event": ev.event, "data": data}));
        } else if ev.event != "end" {
            let stored = serde_json::from_value::<StoredEvent>(data.clone()).unwrap_or_else(|_| {
                StoredEvent {
                    at: None,
                    kind: ev.event.clone(),
                    payload: data.clone(),
                }
            });
            for line in log.event(&stored) {
                println!("{line}");
            }
        }
        if ev.event == "end" {
            let task = api
                .call(
                    Method::GET,
                    &format!("/tasks/{}", crate::project_cmd::path_segment(id)),
                    None,
                )
                .await?;
            let finished: FinishedTask = serde_json::from_value(task)
                .context("the server answered with an unexpected task")?;
            if !json {
                for line in log.finish(&finished) {
                    println!("{line}");
                }
            }
            if finished.status == "completed" {
                return Ok(ExitCode::SUCCESS);
            }
            let error = finished.error.unwrap_or_default();
            anyhow::bail!(
                "task {id} {}{}{error}",
                finished.status,
                if error.is_empty() { "" } else { ": " }
            );
        }
    }
}
