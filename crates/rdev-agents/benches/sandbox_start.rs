//! What the agent sandbox costs at start: the time from `ClaudeCodeAgent::execute` to the
//! CLI's first event (`Started`), with and without bubblewrap, over the same scripted agent.
//! Baseline: the same runs unsandboxed (`agents.sandbox = "none"`), in the same process,
//! interleaved so machine noise hits both alike. Goal (issue 13): at most 50 ms added at p50.
//!
//! Two agents: a stand-in CLI (a shell script printing the stream-json `init` and `result`
//! lines at once, so the figure is the sandbox's own cost), then the real `claude` CLI
//! against the scripted model (fewer runs: each takes about a second).
//!
//! Run: `cargo bench -p rdev-agents --bench sandbox_start` (needs `scripts/setup-tools`,
//! which installs bubblewrap). `RDEV_BENCH_RUNS` (default 100) and
//! `RDEV_BENCH_CLAUDE_RUNS` (default 20) change the counts.

use std::{collections::BTreeMap, path::Path, time::Duration};

use rdev_agents::{
    claude_code::{ClaudeCodeAgent, ClaudeCodeConfig},
    sandbox::{SandboxConfig, SandboxMode},
};
use rdev_core::{AgentEvent, AgentRequest, AgentStatus, CodeAgent, SecretString};
use rdev_testkit::{claude_bin, ScriptedModel};
use tokio::{sync::mpsc, time::Instant};

const INIT: &str =
    r#"{"type":"system","subtype":"init","session_id":"s","model":"stand-in","tools":[]}"#;
const RESULT: &str = r#"{"type":"result","subtype":"success","is_error":false,"session_id":"s","total_cost_usd":0,"usage":{"input_tokens":1,"output_tokens":1},"num_turns":1,"result":"ok"}"#;

fn env(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(base: ClaudeCodeConfig, mode: SandboxMode) -> ClaudeCodeConfig {
    ClaudeCodeConfig {
        sandbox: SandboxConfig {
            mode,
            ..SandboxConfig::default()
        },
        ..base
    }
}

/// Milliseconds from `execute` to the `Started` event, for one run.
async fn start_latency(agent: &ClaudeCodeAgent, workdir: &Path, prompt: &str) -> f64 {
    let (tx, mut rx) = mpsc::channel(64);
    let request = AgentRequest::new(prompt, workdir, Duration::from_secs(120));
    let started = Instant::now();
    let run = agent.execute(request, tx);
    tokio::pin!(run);
    let mut first = None;
    let result = loop {
        tokio::select! {
            r = &mut run => break r,
            Some(ev) = rx.recv() => {
                if first.is_none() && matches!(ev, AgentEvent::Started { .. }) {
                    first = Some(started.elapsed());
                }
            }
        }
    };
    while let Ok(ev) = rx.try_recv() {
        if first.is_none() && matches!(ev, AgentEvent::Started { .. }) {
            first = Some(started.elapsed());
        }
    }
    let result = result.expect("run succeeds");
    assert_eq!(result.status, AgentStatus::Success, "{}", result.output);
    first.expect("a Started event").as_secs_f64() * 1000.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

async fn compare(name: &str, base: ClaudeCodeConfig, workdir: &Path, prompt: &str, runs: usize) {
    let plain = ClaudeCodeAgent::new(config(base.clone(), SandboxMode::None)).unwrap();
    let boxed = ClaudeCodeAgent::new(config(base, SandboxMode::Bubblewrap)).unwrap();
    // Warm-up: page cache, the sandbox's first start check.
    start_latency(&plain, workdir, prompt).await;
    start_latency(&boxed, workdir, prompt).await;
    let (mut a, mut b) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for _ in 0..runs {
        a.push(start_latency(&plain, workdir, prompt).await);
        b.push(start_latency(&boxed, workdir, prompt).await);
    }
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (a50, a99, b50, b99) = (
        percentile(&a, 0.5),
        percentile(&a, 0.99),
        percentile(&b, 0.5),
        percentile(&b, 0.99),
    );
    println!(
        "{name}: {runs} runs each; start latency p50/p99: unsandboxed {a50:.1}/{a99:.1} ms, \
         bubblewrap {b50:.1}/{b99:.1} ms; added at p50 {:.1} ms (goal <= 50 ms), \
         ratio {:.2}x",
        b50 - a50,
        b50 / a50
    );
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let workdir = dir.path().join("work");
    std::fs::create_dir_all(&workdir).unwrap();

    let stand_in = dir.path().join("claude-stand-in");
    std::fs::write(
        &stand_in,
        format!("#!/bin/sh\necho '{INIT}'\necho '{RESULT}'\n"),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&stand_in, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let base = ClaudeCodeConfig {
        bin: Some(stand_in),
        config_root: Some(dir.path().join("state")),
        ..ClaudeCodeConfig::default()
    };
    compare(
        "stand-in CLI",
        base,
        &workdir,
        "go",
        env("RDEV_BENCH_RUNS", 100),
    )
    .await;

    let model = ScriptedModel::start().await.unwrap();
    let base = ClaudeCodeConfig {
        bin: Some(claude_bin()),
        config_root: Some(dir.path().join("state")),
        env: BTreeMap::from([
            (
                "ANTHROPIC_BASE_URL".to_owned(),
                SecretString::new(model.base_url()),
            ),
            (
                "ANTHROPIC_API_KEY".to_owned(),
                SecretString::new("bench-key"),
            ),
        ]),
        ..ClaudeCodeConfig::default()
    };
    let runs = env("RDEV_BENCH_CLAUDE_RUNS", 20);
    compare("real claude CLI", base, &workdir, "@@reply ok", runs).await;
}
