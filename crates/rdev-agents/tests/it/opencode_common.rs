//! Shared set-up for the OpenCode adapter tests: the scripted model server, an OpenCode
//! configuration pointing at it, a supervised (or hand-started) real `opencode serve`, and
//! a helper that runs a prompt and collects its events. Everything is real; nothing here
//! imitates OpenCode.

#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rdev_agents::opencode::{OpenCodeAgent, OpenCodeConfig};
use rdev_core::{AgentError, AgentEvent, AgentRequest, AgentResult, CodeAgent, SecretString};
pub use rdev_testkit::agent_env::{opencode_offline_env, write_opencode_config};
use rdev_testkit::{opencode_bin, ScriptedModel};
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A generous bound that only catches hangs; no test asserts on speed.
pub const HANG_GUARD: Duration = Duration::from_secs(180);

/// A scripted model plus a supervised `opencode serve` behind an [`OpenCodeAgent`].
pub struct Env {
    pub model: ScriptedModel,
    pub agent: Arc<OpenCodeAgent>,
    pub shutdown: CancellationToken,
    pub root: TempDir,
}

impl Env {
    /// Starts the model and a supervised server (with a password, as every supervised
    /// server has) and waits until it is ready.
    pub async fn supervised() -> Env {
        let model = ScriptedModel::start().await.expect("scripted model");
        let root = tempfile::tempdir().unwrap();
        let config = supervised_config(&model, root.path());
        let shutdown = CancellationToken::new();
        let agent = OpenCodeAgent::supervise(config, &shutdown).expect("supervise");
        let server = agent.server().expect("supervised");
        server
            .wait_ready(Duration::from_secs(120))
            .await
            .expect("supervised opencode ready");
        Env {
            model,
            agent: Arc::new(agent),
            shutdown,
            root,
        }
    }

    /// A fresh working directory.
    pub fn workdir(&self, name: &str) -> PathBuf {
        let dir = self.root.path().join("ws").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

/// Config for a supervised server with its state under `root`.
pub fn supervised_config(model: &ScriptedModel, root: &Path) -> OpenCodeConfig {
    let config_file = root.join("opencode.json");
    write_opencode_config(&config_file, &model.base_url(), "test-key");
    let mut config = OpenCodeConfig {
        bin: Some(opencode_bin()),
        availability_timeout: Duration::from_secs(90),
        ..OpenCodeConfig::default()
    };
    config.server.state_dir = Some(root.join("state"));
    config.server.config_file = Some(config_file);
    // The server's sandbox sees the scenarios' checkouts (below `ws`) and nothing else of
    // the test's directory.
    let ws = root.join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    config.server.task_roots = vec![ws];
    for (k, v) in opencode_offline_env() {
        config.server.env.insert(k.to_owned(), SecretString::new(v));
    }
    config
}

/// A request with a generous timeout.
pub fn request(prompt: &str, workdir: &Path) -> AgentRequest {
    AgentRequest::new(prompt, workdir, Duration::from_secs(120))
}

/// What one run produced.
pub struct Outcome {
    pub result: Result<AgentResult, AgentError>,
    pub events: Vec<AgentEvent>,
}

impl Outcome {
    /// The result, or a panic naming the error.
    pub fn ok(&self) -> &AgentResult {
        match &self.result {
            Ok(r) => r,
            Err(e) => panic!("run failed: {e}"),
        }
    }

    /// How many `Completed` events were sent.
    pub fn completed_events(&self) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, AgentEvent::Completed(_)))
            .count()
    }
}

/// Runs `req` to its end and collects every event; panics if it hangs.
pub async fn run(agent: &OpenCodeAgent, req: AgentRequest) -> Outcome {
    let (tx, rx) = mpsc::channel(64);
    let collect = tokio::spawn(drain(rx));
    let result = tokio::time::timeout(HANG_GUARD, agent.execute(req, tx))
        .await
        .expect("execute hung");
    let events = collect.await.unwrap();
    Outcome { result, events }
}

/// Starts `req` in the background and hands its events to the caller as they come.
pub fn spawn_run(
    agent: &Arc<OpenCodeAgent>,
    req: AgentRequest,
) -> (
    tokio::task::JoinHandle<Result<AgentResult, AgentError>>,
    mpsc::Receiver<AgentEvent>,
) {
    let (tx, rx) = mpsc::channel(64);
    let agent = Arc::clone(agent);
    let handle = tokio::spawn(async move {
        tokio::time::timeout(HANG_GUARD, agent.execute(req, tx))
            .await
            .expect("execute hung")
    });
    (handle, rx)
}

/// Reads events until one matches `pred`, returning everything read; panics on a hang.
pub async fn events_until(
    rx: &mut mpsc::Receiver<AgentEvent>,
    pred: impl Fn(&AgentEvent) -> bool,
) -> Vec<AgentEvent> {
    let mut seen = Vec::new();
    tokio::time::timeout(HANG_GUARD, async {
        while let Some(e) = rx.recv().await {
            let hit = pred(&e);
            seen.push(e);
            if hit {
                return;
            }
        }
        panic!("stream ended before the expected event: {seen:?}");
    })
    .await
    .expect("waiting for an event hung");
    seen
}

/// Drains the rest of a run's events.
pub async fn drain(mut rx: mpsc::Receiver<AgentEvent>) -> Vec<AgentEvent> {
    let mut out = Vec::new();
    while let Some(e) = rx.recv().await {
        out.push(e);
    }
    out
}
