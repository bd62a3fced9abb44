//! What the agent sandbox costs at start: the time from `ClaudeCodeAgent::execute` to the
//! CLI's first event (`Started`), with and without bubblewrap, over the same scripted agent.
//! Baseline: the same runs unsandboxed (`agents.sandbox = "none"`), in the same process,
//! interleaved so machine noise hits both alike. Goal (issue 13): at most 50 ms added at p50.
//!
//! Two agents: a stand-in CLI (a shell script printing the stream-json `init` and `result`
//! lines at once, so the figure is the sandbox's own cost), then the real `claude` CLI
//! against the scripted model (fewer runs: each takes about a second). Each is measured
//! three ways: unsandboxed, in bubblewrap alone, and as rdev runs it since the model
//! gateway (issue 14): in bubblewrap with a network namespace of its own, started by the
//! sandbox relay (`rdev-sandbox-relay`), its model calls going through the relay to a
//! stand-in for the gateway's Unix socket that forwards to the scripted model.
//!
//! Run: `cargo bench -p rdev-agents --bench sandbox_start` (needs `scripts/setup-tools`,
//! which installs bubblewrap). `RDEV_BENCH_RUNS` (default 100) and
//! `RDEV_BENCH_CLAUDE_RUNS` (default 20) change the counts.

use std::{collections::BTreeMap, path::Path, time::Duration};

use rdev_agents::{
    claude_code::{ClaudeCodeAgent, ClaudeCodeConfig},
    sandbox::{GatewayLink, SandboxConfig, SandboxMode},
};
use rdev_core::{
    AgentEvent, AgentRequest, AgentStatus, CodeAgent, ModelGrant, SecretString, SessionAttribution,
};
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

fn config(
    base: ClaudeCodeConfig,
    mode: SandboxMode,
    gateway: Option<GatewayLink>,
) -> ClaudeCodeConfig {
    ClaudeCodeConfig {
        sandbox: SandboxConfig {
            mode,
            gateway,
            ..SandboxConfig::default()
        },
        ..base
    }
}

#[derive(Debug)]
struct NoSessions;

impl SessionAttribution for NoSessions {
    fn attribute(&self, _: &str) {}
}

/// A stand-in for rdev's gateway: a Unix socket taking the connections the relay hands
/// over and carrying them to `target` (the scripted model), and the relay the sandbox
/// starts under.
fn gateway_stand_in(dir: &Path, target: std::net::SocketAddr) -> GatewayLink {
    use rdev_agents::sandbox::handoff::{into_tcp, receive_first, First};
    let socket = dir.join("gw.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    tokio::spawn(async move {
        while let Ok((unix, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(First::HandedOff(fd)) = receive_first(&unix).await else {
                    return;
                };
                let Ok(mut inside) = into_tcp(fd) else {
                    return;
                };
                if let Ok(mut outside) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inside, &mut outside).await;
                }
            });
        }
    });
    GatewayLink {
        socket,
        tcp: target,
        relay_bin: Some(env!("CARGO_BIN_EXE_rdev-sandbox-relay").into()),
        server_token: None,
    }
}

/// Milliseconds from `execute` to the `Started` event, for one run.
async fn start_latency(agent: &ClaudeCodeAgent, workdir: &Path, prompt: &str) -> f64 {
    let (tx, mut rx) = mpsc::channel(64);
    let mut request = AgentRequest::new(prompt, workdir, Duration::from_secs(120));
    request.model_grant = Some(ModelGrant {
        token: SecretString::new("rdev-gw-bench"),
        sessions: std::sync::Arc::new(NoSessions),
    });
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

async fn compare(
    name: &str,
    base: ClaudeCodeConfig,
    link: GatewayLink,
    workdir: &Path,
    prompt: &str,
    runs: usize,
) {
    let plain = ClaudeCodeAgent::new(config(base.clone(), SandboxMode::None, None)).unwrap();
    let boxed = ClaudeCodeAgent::new(config(base.clone(), SandboxMode::Bubblewrap, None)).unwrap();
    let netns = ClaudeCodeAgent::new(config(base, SandboxMode::Bubblewrap, Some(link))).unwrap();
    // Warm-up: page cache, the sandbox's first start check.
    for agent in [&plain, &boxed, &netns] {
        start_latency(agent, workdir, prompt).await;
    }
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        a.push(start_latency(&plain, workdir, prompt).await);
        b.push(start_latency(&boxed, workdir, prompt).await);
        c.push(start_latency(&netns, workdir, prompt).await);
    }
    for v in [&mut a, &mut b, &mut c] {
        v.sort_by(f64::total_cmp);
    }
    let p = |v: &[f64]| (percentile(v, 0.5), percentile(v, 0.99));
    let ((a50, a99), (b50, b99), (c50, c99)) = (p(&a), p(&b), p(&c));
    println!(
        "{name}: {runs} runs each; start latency p50/p99: unsandboxed {a50:.1}/{a99:.1} ms, \
         bubblewrap {b50:.1}/{b99:.1} ms, bubblewrap + own network + relay \
         {c50:.1}/{c99:.1} ms; added at p50 {:.1} ms / {:.1} ms (goal <= 50 ms), \
         ratio {:.2}x / {:.2}x",
        b50 - a50,
        c50 - a50,
        b50 / a50,
        c50 / a50
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
    let model = ScriptedModel::start().await.unwrap();
    let model_addr: std::net::SocketAddr = model
        .base_url()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let link = gateway_stand_in(dir.path(), model_addr);
    compare(
        "stand-in CLI",
        base,
        link.clone(),
        &workdir,
        "go",
        env("RDEV_BENCH_RUNS", 100),
    )
    .await;

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
    compare("real claude CLI", base, link, &workdir, "@@reply ok", runs).await;
}
