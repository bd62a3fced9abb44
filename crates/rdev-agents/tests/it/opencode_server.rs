//! Server-level behaviour of the OpenCode adapter with the real `opencode serve`: a
//! supervised server killed mid-run (the run fails with a clear reason, the server comes
//! back), a configured URL to a server without auth, and an unreachable URL.

use std::{process::Stdio, sync::Arc, time::Duration};

use nix::{
    sys::signal::{killpg, Signal},
    unistd::Pid,
};
use rdev_agents::{
    opencode::{OpenCodeAgent, OpenCodeConfig, ServerState},
    process::spawn_in_group,
};
use rdev_core::{AgentEvent, AgentStatus, ErrorCode};
use rdev_testkit::{opencode_bin, ScriptedModel};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::opencode_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_fails_the_run_clearly_and_is_restarted() {
    let env = Env::supervised().await;
    let agent = Arc::clone(&env.agent);
    let server = agent.server().unwrap();
    let ServerState::Ready {
        pid, generation, ..
    } = server.state()
    else {
        panic!("not ready: {:?}", server.state());
    };
    assert_eq!(generation, 1);

    let dir = env.workdir("killed");
    let (handle, mut rx) = spawn_run(&agent, request("@@bash sleep 30\n@@reply never", &dir));
    events_until(&mut rx, |e| matches!(e, AgentEvent::ToolUse { .. })).await;
    killpg(Pid::from_raw(i32::try_from(pid).unwrap()), Signal::SIGKILL).unwrap();

    let r = handle.await.unwrap().expect("a result, not an error");
    assert_eq!(r.status, AgentStatus::Failed, "{r:?}");
    assert!(
        r.output.contains("stopped answering"),
        "unclear reason: {}",
        r.output
    );
    assert!(r.session_id.is_some());
    let rest = drain(rx).await;
    assert!(
        matches!(rest.last(), Some(AgentEvent::Completed(c)) if c.status == AgentStatus::Failed)
    );

    // The supervisor restarts the server; the next run works on the new one.
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    let (_, generation) = loop {
        let (url, generation) = server.wait_ready(HANG_GUARD).await.unwrap();
        if generation > 1 {
            break (url, generation);
        }
        assert!(tokio::time::Instant::now() < deadline, "no restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(generation, 2);
    let out = run(
        &agent,
        request("@@write back.txt\nback\n@@end\n@@reply back", &dir),
    )
    .await;
    assert_eq!(out.ok().status, AgentStatus::Success, "{:?}", out.ok());
    assert_eq!(
        std::fs::read_to_string(dir.join("back.txt")).unwrap(),
        "back\n"
    );

    env.shutdown.cancel();
    tokio::time::timeout(HANG_GUARD, async {
        while server.state() != ServerState::Stopped {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("supervision did not stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_url_without_auth_runs_a_tool_loop() {
    let model = ScriptedModel::start().await.unwrap();
    let root = tempfile::tempdir().unwrap();
    let config_file = root.path().join("opencode.json");
    write_opencode_config(&config_file, &model.base_url(), "test-key");
    let dir = |name: &str| {
        let d = root.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let mut cmd = tokio::process::Command::new(opencode_bin());
    cmd.args(["serve", "--hostname", "127.0.0.1", "--port", "0"])
        .current_dir(dir("work"))
        .env_remove("OPENCODE_SERVER_PASSWORD")
        .env("XDG_DATA_HOME", dir("data"))
        .env("XDG_CONFIG_HOME", dir("config"))
        .env("XDG_CACHE_HOME", dir("cache"))
        .env("XDG_STATE_HOME", dir("state"))
        .env("OPENCODE_CONFIG", &config_file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in opencode_offline_env() {
        cmd.env(k, v);
    }
    let mut child = spawn_in_group(&mut cmd).expect("spawn opencode serve");
    let mut lines = BufReader::new(child.child_mut().stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(HANG_GUARD, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.split("listening on ").nth(1) {
                return url.trim().to_owned();
            }
        }
        panic!("opencode serve exited before listening");
    })
    .await
    .expect("opencode serve did not listen");

    let config = OpenCodeConfig {
        availability_timeout: Duration::from_secs(90),
        url: Some(url.clone()),
        ..OpenCodeConfig::default()
    };
    let agent = OpenCodeAgent::connect(config).unwrap();
    assert!(agent.server().is_none());
    let work = dir("ws");
    let out = run(
        &agent,
        request("@@write plain.txt\nno auth\n@@end\n@@reply ok", &work),
    )
    .await;
    let r = out.ok();
    assert_eq!(r.status, AgentStatus::Success, "{r:?}");
    assert_eq!(
        std::fs::read_to_string(work.join("plain.txt")).unwrap(),
        "no auth\n"
    );
    let _ = child.terminate(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn unreachable_url_is_an_availability_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let agent = OpenCodeAgent::connect(OpenCodeConfig {
        url: Some(format!("http://127.0.0.1:{port}")),
        availability_timeout: Duration::from_secs(1),
        ..OpenCodeConfig::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = run(&agent, request("@@reply hi", dir.path())).await;
    let err = out.result.expect_err("nothing listens there");
    assert_eq!(err.code(), "agent_unavailable");
    let text = err.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(out.events.is_empty());
}
