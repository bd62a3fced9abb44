//! One Claude Code run from spawn to [`AgentResult`]: builds the argv and environment,
//! starts the CLI through a [`Transport`], writes the prompt to stdin, maps stdout with the
//! [`StreamParser`], and ends the process family on completion, cancel, timeout or an
//! unavailable CLI; a session kept beyond its run is put in place before and saved after
//! ([`super::sessions`]). It owns no state across runs (the agent keeps the cancel table).

use std::{
    path::PathBuf,
    pin::Pin,
    process::ExitStatus,
    time::{Duration, Instant},
};

use rdev_core::{
    AgentError, AgentEvent, AgentRequest, AgentResult, AgentStatus, EventSink, SecretString, Usage,
};
use tokio::{
    io::{AsyncWriteExt, BufReader},
    time::Sleep,
};
use tokio_util::sync::CancellationToken;

use super::{
    config::{check_env_name, ClaudeCodeConfig, PermissionMode},
    sessions::SessionFiles,
    stream::{LineReader, StreamParser},
    transport::{parse_remote_pid, Launch, Transport},
};
use crate::{
    common::{invalid, sleep_opt},
    process::{self, BoundedCapture, GroupChild},
    redact::EventRedactor,
};

/// Most stderr kept for error messages.
pub const STDERR_LIMIT: usize = 16 * 1024;

/// After the family is killed, how long to wait for every member to be gone (`SIGKILL`
/// lands asynchronously; normally within a millisecond).
const SETTLE: Duration = Duration::from_secs(2);

/// After the CLI exits, how long to keep reading output a leftover process might still
/// hold open before giving up on EOF.
const DRAIN: Duration = Duration::from_secs(2);

/// Flags rdev always sets: no update checks, telemetry or error reports from an unattended
/// run (see docs/claude-code.md).
const FIXED_ENV: &[(&str, &str)] = &[
    ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
    ("DISABLE_AUTOUPDATER", "1"),
    ("DISABLE_TELEMETRY", "1"),
    ("DISABLE_ERROR_REPORTING", "1"),
];

/// Everything one run needs from the agent.
#[derive(Debug)]
pub struct RunContext<'a> {
    pub config: &'a ClaudeCodeConfig,
    pub transport: &'a dyn Transport,
    pub bin: &'a std::path::Path,
}

/// The CLI arguments for `request` (the prompt is not among them: it goes on stdin).
///
/// Values from the request are glued to their flag (`--model=<name>`, `--resume=<id>`), one
/// argv element each: `--resume` takes an optional value, so a separate element that looks
/// like an option (`--resume --permission-mode=...`) would be parsed as one.
/// `AgentRequest::validate` refuses such values first; this is the second wall.
pub fn cli_args(config: &ClaudeCodeConfig, request: &AgentRequest) -> Vec<String> {
    let mut args: Vec<String> = ["-p", "--output-format", "stream-json", "--verbose"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    args.extend([
        "--permission-mode".to_owned(),
        config.permission_mode.as_str().to_owned(),
    ]);
    if let Some(model) = &request.model {
        args.push(format!("--model={model}"));
    }
    if let Some(turns) = request.max_turns {
        args.extend(["--max-turns".to_owned(), turns.to_string()]);
    }
    if let Some(cost) = request.max_cost_usd {
        args.extend(["--max-budget-usd".to_owned(), cost.to_string()]);
    }
    if let Some(session) = &request.session_id {
        args.push(format!("--resume={session}"));
    }
    args.extend(config.extra_args.iter().cloned());
    args
}

/// Whether an inherited variable's value is treated as a secret for redaction.
fn looks_secret(name: &str) -> bool {
    ["KEY", "TOKEN", "SECRET", "PASSWORD", "AUTH"]
        .iter()
        .any(|w| name.to_ascii_uppercase().contains(w))
}

/// The gateway a run's model calls go through (its base URL as the agent sees it) and the
/// token, when the request holds a grant for it.
fn gateway<'a>(
    config: &ClaudeCodeConfig,
    request: &'a AgentRequest,
) -> Option<(String, &'a SecretString)> {
    let grant = request.model_grant.as_ref()?;
    Some((config.gateway_base_url()?, &grant.token))
}

/// The variables rdev sets, in increasing precedence: fixed flags, the per-workdir config
/// dir, configured env, request env; with a gateway grant, every model credential, endpoint
/// and proxy among them is replaced by the gateway's (the agent never holds a real key).
fn run_env(
    config: &ClaudeCodeConfig,
    request: &AgentRequest,
) -> Result<Vec<(String, SecretString)>, AgentError> {
    let mut env: std::collections::BTreeMap<String, SecretString> = FIXED_ENV
        .iter()
        .map(|(k, v)| ((*k).to_owned(), SecretString::new(*v)))
        .collect();
    if config.permission_mode == PermissionMode::BypassPermissions {
        // The CLI refuses bypass mode as root unless told it runs in a sandbox; rdev runs
        // agents in checkouts made for them (see docs/claude-code.md).
        env.insert("IS_SANDBOX".to_owned(), SecretString::new("1"));
    }
    if let Some(dir) = config.config_dir(&request.workdir) {
        std::fs::create_dir_all(&dir)
            .map_err(|e| AgentError::Spawn(format!("cannot create {}: {e}", dir.display())))?;
        env.insert(
            "CLAUDE_CONFIG_DIR".to_owned(),
            SecretString::new(dir.to_string_lossy().into_owned()),
        );
    }
    // `config.env` names were checked once, in `ClaudeCodeAgent::new`.
    env.extend(config.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    for (k, v) in &request.env {
        check_env_name(k).map_err(|e| invalid("env", e.to_string()))?;
        env.insert(k.clone(), v.clone());
    }
    if let Some((base, token)) = gateway(config, request) {
        env.retain(|k, _| !crate::sandbox::bypasses_gateway(k));
        env.extend(crate::sandbox::gateway_env(base, token));
    }
    Ok(env.into_iter().collect())
}

/// Why the read loop stopped.
enum Stop {
    Exited(ExitStatus),
    Eof,
    Cancelled,
    TimedOut,
    Unavailable,
    SinkClosed,
    ReadError(String),
}

/// Runs `request` to its end.
pub async fn run(
    ctx: RunContext<'_>,
    request: AgentRequest,
    events: EventSink,
    cancel: CancellationToken,
) -> Result<AgentResult, AgentError> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + request.timeout;
    let env = run_env(ctx.config, &request)?;
    // A session kept beyond its run goes where the CLI looks for it (after `run_env`, which
    // makes the config dir).
    let sessions = SessionFiles::for_run(ctx.config, &request);
    if let (Some(files), Some(id)) = (&sessions, &request.session_id) {
        files.restore(id)?;
    }
    let mut inherited = crate::env::inherited(&ctx.config.inherit_env);
    let grant_token = gateway(ctx.config, &request).map(|(_, token)| token);
    if grant_token.is_some() {
        inherited.retain(|(k, _)| !k.to_str().is_some_and(crate::sandbox::bypasses_gateway));
    }
    // Redact what the configuration and the request supplied, the gateway token, and
    // inherited variables whose names say they are credentials; rdev's own flags and paths
    // are not secrets.
    let redactor = EventRedactor::new(
        ctx.config
            .env
            .values()
            .chain(request.env.values())
            .chain(grant_token)
            .map(SecretString::expose)
            .chain(
                inherited
                    .iter()
                    .filter_map(|(k, v)| k.to_str().filter(|k| looks_secret(k)).and(v.to_str())),
            ),
    );
    let writable = env
        .iter()
        .filter(|(k, _)| k == "CLAUDE_CONFIG_DIR")
        .map(|(_, v)| PathBuf::from(v.expose()))
        .collect();
    let prepared = ctx
        .transport
        .prepare(Launch {
            bin: ctx.bin.to_path_buf(),
            args: cli_args(ctx.config, &request),
            workdir: request.workdir.clone(),
            inherited,
            env,
            writable,
            read_only: request.read_only_paths.clone(),
        })
        .await?;
    let _scratch = prepared.scratch;
    let mut command = prepared.command;
    let mut child = process::spawn_in_group(&mut command)
        .map_err(|e| AgentError::Spawn(format!("{}: {e}", display_program(&ctx, &command))))?;
    tracing::debug!(pid = child.pid(), run = %request.run_id, "claude started");

    let stdin = child.child_mut().stdin.take();
    let mut input = prepared.stdin_preamble;
    input.extend_from_slice(request.prompt.as_bytes());
    // Written concurrently: a prompt larger than the pipe buffer must not block reading.
    let writer = tokio::spawn(async move {
        if let Some(mut stdin) = stdin {
            // A CLI that dies early closes the pipe; its exit status tells why.
            let _ = stdin.write_all(&input).await;
            let _ = stdin.shutdown().await;
        }
    });
    let stderr = child
        .child_mut()
        .stderr
        .take()
        .map(|s| BoundedCapture::start(s, STDERR_LIMIT));
    let stdout = child
        .child_mut()
        .stdout
        .take()
        .ok_or_else(|| AgentError::Spawn("no stdout pipe".to_owned()))?;

    let mut lines = LineReader::new(BufReader::with_capacity(256 * 1024, stdout));
    let mut parser = StreamParser::new();
    let mut batch = Vec::new();
    let mut remote_pid = None;
    let mut first_line = true;
    let avail_deadline = tokio::time::Instant::now() + ctx.config.availability_timeout;
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    let mut exited = None;

    // One timer for the whole run rather than a new one per line and per event.
    let timeout = tokio::time::sleep_until(deadline);
    tokio::pin!(timeout);
    let stop = loop {
        let line = tokio::select! {
            biased;
            _ = cancel.cancelled() => break Stop::Cancelled,
            _ = &mut timeout => break Stop::TimedOut,
            _ = tokio::time::sleep_until(avail_deadline), if first_line => break Stop::Unavailable,
            _ = sleep_opt(drain_deadline) => break Stop::Exited(exited.unwrap_or_default()),
            status = child.wait(), if exited.is_none() => {
                let status = status.map_err(AgentError::from)?;
                exited = Some(status);
                drain_deadline = Some(tokio::time::Instant::now() + DRAIN);
                continue;
            }
            line = lines.next_line() => line,
        };
        let line = match line {
            Ok(Some(line)) => line,
            Ok(None) => break Stop::Eof,
            Err(e) => break Stop::ReadError(e.to_string()),
        };
        if first_line {
            first_line = false;
            if ctx.transport.reports_remote_pid() {
                if let Some(pid) = parse_remote_pid(line) {
                    remote_pid = Some(pid);
                    first_line = true;
                    continue;
                }
            }
        }
        let had_result = parser.result().is_some();
        parser.parse_line(line, &mut batch);
        let tool_done = batch
            .iter()
            .any(|e| matches!(e, AgentEvent::ToolResult { .. }));
        if tool_done || (!had_result && parser.result().is_some()) {
            // A tool just ran, or the CLI is about to exit: record its family while the
            // tree is intact, so background jobs started by tools (in their own sessions)
            // are still found after the CLI exits and they are reparented.
            child.remember_family();
        }
        if let Some(stop) =
            send_all(&events, &mut batch, &redactor, &cancel, timeout.as_mut()).await
        {
            break stop;
        }
    };

    let status = finish_process(&ctx, &mut child, &stop, remote_pid, &events, &redactor).await;
    let left = child.settled(SETTLE).await;
    if !left.is_empty() {
        tracing::warn!(?left, "processes of the run were still alive after SIGKILL");
    }
    writer.abort();
    let stderr_text = match stderr {
        Some(c) => redactor.text(c.finish(Duration::from_millis(500)).await.trim()),
        None => String::new(),
    };
    let elapsed = started.elapsed();
    if let Stop::Unavailable = stop {
        return Err(AgentError::Unavailable {
            waited: ctx.config.availability_timeout,
            reason: format!("claude printed nothing; stderr: {}", or_none(&stderr_text)),
        });
    }
    if let Stop::SinkClosed = stop {
        return Err(AgentError::SinkClosed);
    }
    if let Stop::ReadError(e) = &stop {
        let _ = events
            .send(AgentEvent::Error {
                message: format!("reading claude output: {e}"),
            })
            .await;
    }
    let mut result = build_result(
        &stop,
        &parser,
        status,
        &stderr_text,
        elapsed,
        request.timeout,
    );
    redactor.result(&mut result);
    if let (Some(files), Some(id)) = (&sessions, &result.session_id) {
        if let Err(e) = files.save(id) {
            let message = format!("session {id} was not kept for a later resume: {e}");
            tracing::warn!(%message);
            let _ = events.send(AgentEvent::Error { message }).await;
        }
    }
    let _ = events.send(AgentEvent::Completed(result.clone())).await;
    Ok(result)
}

fn display_program(ctx: &RunContext<'_>, command: &tokio::process::Command) -> String {
    let program = PathBuf::from(command.as_std().get_program());
    if program == ctx.bin {
        format!("cannot run {}", program.display())
    } else {
        format!(
            "cannot run {} (for {})",
            program.display(),
            ctx.bin.display()
        )
    }
}

/// Sends a batch of events, staying responsive to cancel and timeout while a slow
/// consumer applies back-pressure.
async fn send_all(
    events: &EventSink,
    batch: &mut Vec<AgentEvent>,
    redactor: &EventRedactor,
    cancel: &CancellationToken,
    mut timeout: Pin<&mut Sleep>,
) -> Option<Stop> {
    for mut event in batch.drain(..) {
        redactor.event(&mut event);
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return Some(Stop::Cancelled),
            _ = &mut timeout => return Some(Stop::TimedOut),
            sent = events.send(event) => if sent.is_err() { return Some(Stop::SinkClosed) },
        }
    }
    None
}

/// Ends the process family according to `stop` and returns the leader's exit status.
async fn finish_process(
    ctx: &RunContext<'_>,
    child: &mut GroupChild,
    stop: &Stop,
    remote_pid: Option<u32>,
    events: &EventSink,
    redactor: &EventRedactor,
) -> Option<ExitStatus> {
    match stop {
        Stop::Exited(status) => {
            child.cleanup();
            Some(*status)
        }
        Stop::Eof => {
            // stdout closed: the CLI is exiting. Give it the grace period, then force it.
            match tokio::time::timeout(ctx.config.kill_grace, child.wait()).await {
                Ok(Ok(status)) => {
                    child.cleanup();
                    Some(status)
                }
                // terminate ends the family itself; a cleanup after it finds nothing new.
                _ => child.terminate(Duration::ZERO).await.ok(),
            }
        }
        _ => {
            if let Some(pid) = remote_pid {
                // Killing kubectl does not stop the process in the pod; do that first, while
                // the local side is still alive.
                if let Err(e) = ctx
                    .transport
                    .kill_remote(pid, ctx.config.kill_grace.max(Duration::from_secs(5)))
                    .await
                {
                    let message = redactor.text(&format!(
                        "could not kill the remote claude (pid {pid}): {e}"
                    ));
                    let _ = events.try_send(AgentEvent::Error { message });
                }
            }
            child.terminate(ctx.config.kill_grace).await.ok()
        }
    }
}

fn or_none(s: &str) -> &str {
    if s.is_empty() {
        "(empty)"
    } else {
        s
    }
}

/// The result for a run that stopped with `stop`. A `result` line, when the CLI printed
/// one, wins over how the process ended: it is the agent's own account of the run.
fn build_result(
    stop: &Stop,
    parser: &StreamParser,
    status: Option<ExitStatus>,
    stderr: &str,
    duration: Duration,
    timeout: Duration,
) -> AgentResult {
    let mut result = AgentResult {
        status: AgentStatus::Failed,
        output: String::new(),
        session_id: parser.session_id().map(str::to_owned),
        cost_usd: None,
        usage: Usage::default(),
        num_turns: 0,
        duration,
    };
    if let Some(r) = parser.result() {
        result.status = if r.is_error || r.subtype != "success" {
            AgentStatus::Failed
        } else {
            AgentStatus::Success
        };
        // The CLI reports API errors as `subtype: success, is_error: true`; name the
        // subtype only when it says something (`error_max_turns`, ...).
        result.output = if r.is_error && r.subtype != "success" && r.text != r.subtype {
            format!("{}: {}", r.subtype, r.text)
        } else {
            r.text.clone()
        };
        result.session_id = r.session_id.clone().or(result.session_id);
        result.cost_usd = r.cost_usd;
        result.usage = r.usage;
        result.num_turns = r.num_turns;
        return result;
    }
    match stop {
        Stop::Cancelled => {
            result.status = AgentStatus::Cancelled;
            result.output = "cancelled".to_owned();
        }
        Stop::TimedOut => {
            result.status = AgentStatus::TimedOut;
            result.output = format!("timed out after {}s", timeout.as_secs());
        }
        _ => {
            let how = status.map_or_else(|| "an unknown status".to_owned(), |s| s.to_string());
            result.output = format!(
                "claude ended with {how} without a result; stderr: {}",
                or_none(stderr)
            );
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rdev_core::RequestLimits;

    use super::*;

    fn request() -> AgentRequest {
        AgentRequest::new("hi", "/tmp", Duration::from_secs(5))
    }

    #[test]
    fn option_like_model_and_session_id_are_refused_and_never_become_options() {
        let config = ClaudeCodeConfig::default();
        let baseline = cli_args(&config, &request());
        for v in [
            "--add-dir=/",
            "-p",
            "--permission-mode=default",
            "--permission-mode",
            "--",
        ] {
            let mut r = request();
            r.model = Some(v.into());
            r.session_id = Some(v.into());
            // The adapter's first check refuses them...
            assert!(r.validate(&RequestLimits::UNBOUNDED).is_err(), "{v}");
            // ...and were they built anyway, each is one element glued after its flag's `=`.
            let args = cli_args(&config, &r);
            let added: Vec<&str> = args
                .iter()
                .filter(|a| !baseline.contains(a))
                .map(String::as_str)
                .collect();
            assert_eq!(args.len(), baseline.len() + 2, "{args:?}");
            assert_eq!(
                added,
                [format!("--model={v}"), format!("--resume={v}")],
                "{args:?}"
            );
        }
    }
}
