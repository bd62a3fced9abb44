//! The OpenCode adapter against the real `opencode serve` (from npm, `scripts/setup-tools`)
//! and the scripted model server. One supervised server (about 10 s to start offline) is
//! shared by every scenario in this file; the scenarios run concurrently on it, which also
//! proves one server serves many sessions without crossing their events. Each scenario is
//! its own task so a failure names the scenario.

use std::{sync::Arc, time::Duration};

use futures::future::join_all;
use rdev_agents::opencode::{OpenCodeAgent, OpenCodeConfig};
use rdev_core::{AgentError, AgentEvent, AgentStatus, CodeAgent, ErrorCode, SecretString};

use crate::opencode_common::*;

type Scenario = (&'static str, tokio::task::JoinHandle<()>);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn opencode_adapter_scenarios_on_one_real_server() {
    let env = Arc::new(Env::supervised().await);
    let mut scenarios: Vec<Scenario> = Vec::new();
    macro_rules! scenario {
        ($f:ident) => {
            scenarios.push((stringify!($f), tokio::spawn($f(Arc::clone(&env)))));
        };
    }
    scenario!(tool_loop_writes_files_and_reports_cost_and_tokens);
    scenario!(two_concurrent_sessions_in_one_directory_do_not_cross_events);
    scenario!(abort_mid_run_stops_the_tool_and_leaves_the_session_idle);
    scenario!(cancel_before_start_ends_at_once_without_a_session);
    scenario!(cancel_while_the_prompt_is_sent_aborts_the_accepted_turn);
    scenario!(cancel_after_completion_is_a_no_op);
    scenario!(many_concurrent_cancels_end_the_run_once);
    scenario!(timeout_aborts_and_reports_timed_out);
    scenario!(resumed_session_counts_only_the_new_prompt);
    scenario!(a_kept_session_is_recreated_in_another_checkout);
    scenario!(model_error_is_a_failed_result_with_the_reason);
    scenario!(turn_limit_stops_the_run);
    scenario!(wrong_password_is_an_http_error_with_method_path_and_status);
    let mut failed = Vec::new();
    for (name, handle) in scenarios.drain(..) {
        if let Err(e) = handle.await {
            eprintln!("scenario {name} failed: {e}");
            failed.push(name);
        }
    }
    // Alone, so that its timed cancels are not skewed by the load of the others.
    scenario!(cancels_at_every_moment_never_hang_or_leave_a_busy_session);
    for (name, handle) in scenarios {
        if let Err(e) = handle.await {
            eprintln!("scenario {name} failed: {e}");
            failed.push(name);
        }
    }
    env.shutdown.cancel();
    assert!(failed.is_empty(), "failed scenarios: {failed:?}");
}

/// OpenCode takes the model in a JSON body and the session id in a URL path
/// (`/session/{id}/message`), never in argv; the adapter still refuses values that are
/// option-like or would change the path before it contacts any server (nothing listens at
/// the configured URL, so reaching it would be `agent_unavailable`).
#[tokio::test]
async fn option_like_model_and_path_changing_session_id_are_refused_before_any_request() {
    let agent = OpenCodeAgent::connect(OpenCodeConfig {
        url: Some("http://127.0.0.1:9".to_owned()),
        ..OpenCodeConfig::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (model, session, code) in [
        (Some("--add-dir=/"), None, "invalid_model"),
        (Some("-p"), None, "invalid_model"),
        (
            None,
            Some("--permission-mode=default"),
            "invalid_session_id",
        ),
        (None, Some("ses_1/../../config"), "invalid_session_id"),
    ] {
        let mut req = request("@@reply hi", dir.path());
        req.model = model.map(str::to_owned);
        req.session_id = session.map(str::to_owned);
        let err = run(&agent, req).await.result.expect_err("must be refused");
        assert_eq!(err.code(), code, "{model:?} {session:?}: {err}");
    }
}

async fn tool_loop_writes_files_and_reports_cost_and_tokens(env: Arc<Env>) {
    let dir = env.workdir("tool-loop");
    let prompt = "@@write hello.txt\nhello from opencode\n@@end\n@@bash echo bash-ran > b.txt\n@@reply all good";
    let out = run(&env.agent, request(prompt, &dir)).await;
    let r = out.ok();
    assert_eq!(r.status, AgentStatus::Success, "{r:?}");
    assert_eq!(r.output, "all good");
    assert_eq!(
        std::fs::read_to_string(dir.join("hello.txt")).unwrap(),
        "hello from opencode\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("b.txt")).unwrap().trim(),
        "bash-ran"
    );
    assert_eq!(r.num_turns, 3, "{r:?}");
    assert!(r.cost_usd.unwrap_or(0.0) > 0.0, "{r:?}");
    assert!(
        r.usage.input_tokens > 0 && r.usage.output_tokens > 0,
        "{r:?}"
    );
    let session = r.session_id.clone().expect("session id");
    match &out.events[0] {
        AgentEvent::Started {
            session_id, tools, ..
        } => {
            assert_eq!(session_id.as_deref(), Some(session.as_str()));
            assert!(tools.iter().any(|t| t == "write"), "{tools:?}");
        }
        other => panic!("first event {other:?}"),
    }
    let uses: Vec<_> = out
        .events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::ToolUse { name, input, .. } => Some((name.as_str(), input.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(uses.len(), 2, "{:?}", out.events);
    assert_eq!(uses[0].0, "write");
    assert!(uses[0].1["filePath"]
        .as_str()
        .unwrap()
        .ends_with("hello.txt"));
    assert_eq!(uses[1].0, "bash");
    let results = out
        .events
        .iter()
        .filter(|e| {
            matches!(
                e,
                AgentEvent::ToolResult {
                    is_error: false,
                    ..
                }
            )
        })
        .count();
    assert_eq!(results, 2, "{:?}", out.events);
    assert!(out.events.iter().any(|e| matches!(e, AgentEvent::Usage(_))));
    assert!(out
        .events
        .iter()
        .any(|e| matches!(e, AgentEvent::Message { role, text } if role == "assistant" && text == "all good")));
    assert!(matches!(out.events.last(), Some(AgentEvent::Completed(c)) if c == r));
    assert_eq!(out.completed_events(), 1);
}

async fn two_concurrent_sessions_in_one_directory_do_not_cross_events(env: Arc<Env>) {
    let dir = env.workdir("shared-dir");
    let a = "@@sleep 300\n@@write alpha.txt\nAAA\n@@end\n@@reply reply-alpha";
    let b = "@@write beta.txt\nBBB\n@@end\n@@sleep 300\n@@reply reply-beta";
    let (oa, ob) = tokio::join!(
        run(&env.agent, request(a, &dir)),
        run(&env.agent, request(b, &dir))
    );
    let (ra, rb) = (oa.ok(), ob.ok());
    assert_eq!(
        (ra.status, rb.status),
        (AgentStatus::Success, AgentStatus::Success)
    );
    assert_ne!(ra.session_id, rb.session_id);
    assert_eq!(
        (ra.output.as_str(), rb.output.as_str()),
        ("reply-alpha", "reply-beta")
    );
    for (out, mine, theirs) in [(&oa, "alpha", "beta"), (&ob, "beta", "alpha")] {
        let text = serde_json::to_string(&out.events).unwrap();
        assert!(text.contains(mine), "{mine} missing from its own events");
        assert!(
            !text.contains(theirs),
            "{theirs} leaked into {mine}'s events: {text}"
        );
    }
}

async fn abort_mid_run_stops_the_tool_and_leaves_the_session_idle(env: Arc<Env>) {
    let dir = env.workdir("abort");
    let req = request(
        "@@bash sleep 20 && echo late > late.txt\n@@reply never",
        &dir,
    );
    let run_id = req.run_id;
    let (handle, mut rx) = spawn_run(&env.agent, req);
    events_until(
        &mut rx,
        |e| matches!(e, AgentEvent::ToolUse { name, .. } if name == "bash"),
    )
    .await;
    env.agent.cancel(run_id).await.unwrap();
    let r = handle.await.unwrap().expect("result");
    assert_eq!(r.status, AgentStatus::Cancelled, "{r:?}");
    let rest = drain(rx).await;
    assert_eq!(
        rest.iter()
            .filter(|e| matches!(e, AgentEvent::Completed(_)))
            .count(),
        1
    );
    let client = env.agent.client().await.unwrap();
    let busy = client
        .busy_sessions(&std::fs::canonicalize(&dir).unwrap())
        .await
        .unwrap();
    assert!(
        !busy.contains_key(r.session_id.as_deref().unwrap()),
        "still busy: {busy:?}"
    );
    assert!(!dir.join("late.txt").exists());
}

async fn cancel_before_start_ends_at_once_without_a_session(env: Arc<Env>) {
    let dir = env.workdir("early");
    let req = request("@@write never.txt\nx\n@@end", &dir);
    env.agent.cancel(req.run_id).await.unwrap();
    let out = run(&env.agent, req).await;
    let r = out.ok();
    assert_eq!(r.status, AgentStatus::Cancelled);
    assert_eq!(r.session_id, None);
    assert_eq!(out.events.len(), 1, "{:?}", out.events);
    assert!(!dir.join("never.txt").exists());
}

async fn cancel_while_the_prompt_is_sent_aborts_the_accepted_turn(env: Arc<Env>) {
    // `Started` is sent right before the prompt POST; cancelling on it lands while the POST
    // is being made or just after. Either way the accepted turn must be aborted: the
    // script would write late.txt after 1.5 s.
    let dir = env.workdir("in-flight");
    let req = request("@@sleep 1500\n@@write late.txt\nx\n@@end\n@@reply no", &dir);
    let run_id = req.run_id;
    let (handle, mut rx) = spawn_run(&env.agent, req);
    events_until(&mut rx, |e| matches!(e, AgentEvent::Started { .. })).await;
    env.agent.cancel(run_id).await.unwrap();
    let r = handle.await.unwrap().expect("result");
    assert_eq!(r.status, AgentStatus::Cancelled, "{r:?}");
    let session = r.session_id.clone().expect("the session existed");
    let client = env.agent.client().await.unwrap();
    let abs = std::fs::canonicalize(&dir).unwrap();
    assert!(!client
        .busy_sessions(&abs)
        .await
        .unwrap()
        .contains_key(&session));
    // The turn is over in the server's own record: its assistant message ended as aborted
    // and holds no tool call, so the script's write can never run.
    let messages = client.messages(&session, &abs).await.unwrap();
    let last = messages.last().expect("the session has messages");
    assert_eq!(last["info"]["role"], "assistant", "{last}");
    assert_eq!(
        last["info"]["error"]["name"], "MessageAbortedError",
        "the turn ended as aborted: {last}"
    );
    let parts = last["parts"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    assert!(
        parts.iter().all(|p| p["type"] != "tool"),
        "no tool ran in the aborted turn: {last}"
    );
    assert!(
        !dir.join("late.txt").exists(),
        "the turn kept running after cancel"
    );
}

async fn cancel_after_completion_is_a_no_op(env: Arc<Env>) {
    let dir = env.workdir("after");
    let req = request("@@reply finished", &dir);
    let run_id = req.run_id;
    let out = run(&env.agent, req).await;
    assert_eq!(out.ok().status, AgentStatus::Success);
    env.agent.cancel(run_id).await.unwrap();
    env.agent.cancel(run_id).await.unwrap();
    // A later run is unaffected by the late cancels, even one that reuses the id (a late
    // cancel wrongly kept as an early one would end it as "cancelled before start").
    let mut req = request("@@reply again", &dir);
    req.run_id = run_id;
    let again = run(&env.agent, req).await;
    assert_eq!(again.ok().output, "again");
}

async fn many_concurrent_cancels_end_the_run_once(env: Arc<Env>) {
    let dir = env.workdir("many-cancels");
    let req = request("@@bash sleep 20\n@@reply never", &dir);
    let run_id = req.run_id;
    let (handle, mut rx) = spawn_run(&env.agent, req);
    events_until(&mut rx, |e| matches!(e, AgentEvent::ToolUse { .. })).await;
    let cancels = (0..64).map(|_| {
        let agent = Arc::clone(&env.agent);
        tokio::spawn(async move { agent.cancel(run_id).await })
    });
    for c in join_all(cancels).await {
        c.unwrap().unwrap();
    }
    let r = handle.await.unwrap().expect("result");
    assert_eq!(r.status, AgentStatus::Cancelled);
    let rest = drain(rx).await;
    assert_eq!(
        rest.iter()
            .filter(|e| matches!(e, AgentEvent::Completed(_)))
            .count(),
        1
    );
}

async fn cancels_at_every_moment_never_hang_or_leave_a_busy_session(env: Arc<Env>) {
    // Cancels spread from "at once" to "well into the run", so they land before the
    // session exists, while it is created, while the prompt is sent, or while tools run.
    // One directory, warmed first: OpenCode boots an instance per new directory, which
    // would otherwise swallow the early delays.
    let dir = env.workdir("sweep");
    assert_eq!(
        run(&env.agent, request("@@reply warm", &dir))
            .await
            .ok()
            .output,
        "warm"
    );
    let delays_ms = [
        0u64, 1, 3, 10, 30, 100, 150, 200, 250, 300, 1000, 2000, 3500, 7000,
    ];
    let runs = delays_ms.iter().map(|&ms| {
        let env = Arc::clone(&env);
        let dir = dir.clone();
        async move {
            let prompt = format!("@@bash sleep 8\n@@write late-{ms}.txt\nx\n@@end\n@@reply done");
            let req = request(&prompt, &dir);
            let run_id = req.run_id;
            let (handle, rx) = spawn_run(&env.agent, req);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            env.agent.cancel(run_id).await.unwrap();
            let r = handle.await.unwrap().expect("result");
            let events = drain(rx).await;
            (ms, dir, r, events)
        }
    });
    let outcomes = join_all(runs).await;
    let phases: std::collections::BTreeSet<&str> = outcomes
        .iter()
        .map(|(_, _, r, _)| r.output.as_str())
        .collect();
    eprintln!("cancel sweep: phases hit: {phases:?}");
    for (ms, _, r, _) in &outcomes {
        eprintln!(
            "cancel sweep: after {ms} ms -> {:?} {:?}",
            r.output,
            r.session_id.is_some()
        );
    }
    // Which phase a timed cancel lands in depends on the machine's load (a directory's
    // first subscription boots an OpenCode instance); the event-triggered scenarios above
    // pin each phase down. Here every landing must keep the invariants below.
    assert!(phases.len() >= 2, "{phases:?}");
    for (ms, dir, r, events) in outcomes {
        assert_eq!(
            r.status,
            AgentStatus::Cancelled,
            "cancel after {ms} ms: {r:?}"
        );
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(e, AgentEvent::Completed(_)))
                .count(),
            1,
            "cancel after {ms} ms"
        );
        if let Some(session) = &r.session_id {
            let client = env.agent.client().await.unwrap();
            let busy = client
                .busy_sessions(&std::fs::canonicalize(&dir).unwrap())
                .await
                .unwrap();
            assert!(
                !busy.contains_key(session),
                "cancel after {ms} ms left {session} busy"
            );
        }
        assert!(
            !dir.join(format!("late-{ms}.txt")).exists(),
            "cancel after {ms} ms: run went on"
        );
    }
}

async fn timeout_aborts_and_reports_timed_out(env: Arc<Env>) {
    let dir = env.workdir("timeout");
    let mut req = request("@@bash sleep 30\n@@reply never", &dir);
    req.timeout = Duration::from_secs(4);
    let out = run(&env.agent, req).await;
    let r = out.ok();
    assert_eq!(r.status, AgentStatus::TimedOut, "{r:?}");
    assert!(r.output.contains("timed out"), "{r:?}");
}

async fn resumed_session_counts_only_the_new_prompt(env: Arc<Env>) {
    let dir = env.workdir("resume");
    let first = run(
        &env.agent,
        request("@@write one.txt\n1\n@@end\n@@reply first", &dir),
    )
    .await;
    let first = first.ok().clone();
    assert_eq!(first.num_turns, 2);
    let mut req = request("@@reply second", &dir);
    req.session_id = first.session_id.clone();
    let out = run(&env.agent, req).await;
    let r = out.ok();
    assert_eq!(r.status, AgentStatus::Success);
    assert_eq!(r.session_id, first.session_id);
    assert_eq!(r.output, "second");
    assert_eq!(r.num_turns, 1, "{r:?}");
}

/// With a session directory (as rdev runs builds), a session made in one checkout goes on
/// in the next one: OpenCode binds a session to its directory, so the adapter recreates it
/// there, carrying the earlier messages.
async fn a_kept_session_is_recreated_in_another_checkout(env: Arc<Env>) {
    let (one, two) = (env.workdir("kept-1"), env.workdir("kept-2"));
    let store = env.root.path().join("sessions/site/opencode");
    let mut req = request(
        "Kept first build\n@@write a.txt\nhello\n@@end\n@@reply kept first done",
        &one,
    );
    req.session_dir = Some(store.clone());
    let first = run(&env.agent, req).await.ok().clone();
    let old = first.session_id.clone().expect("session id");
    assert!(store.join(format!("{old}.json")).is_file());
    std::fs::remove_dir_all(&one).unwrap();

    let mut req = request(
        "Kept second build\n@@write b.txt\nbye\n@@end\n@@reply kept second done",
        &two,
    );
    req.session_id = Some(old.clone());
    req.session_dir = Some(store.clone());
    let out = run(&env.agent, req).await;
    let r = out.ok();
    assert_eq!(r.status, AgentStatus::Success, "{r:?}");
    assert_eq!(r.output, "kept second done");
    assert_eq!(r.num_turns, 2, "only this prompt counts: {r:?}");
    let new = r.session_id.clone().expect("session id");
    assert_ne!(new, old, "recreated as a new session");
    assert!(store.join(format!("{new}.json")).is_file());
    assert_eq!(std::fs::read_to_string(two.join("b.txt")).unwrap(), "bye\n");
    assert!(!one.exists(), "nothing ran in the earlier checkout");
    assert!(
        !out.events.iter().any(
            |e| matches!(e, AgentEvent::Message { text, .. } if text.contains("Kept first build"))
        ),
        "the carried conversation is not shown as this run's messages"
    );
    let sent = env
        .model
        .requests()
        .into_iter()
        .find(|q| {
            !q.side
                && q.messages
                    .iter()
                    .any(|m| m.texts.iter().any(|t| t.contains("Kept second build")))
        })
        .expect("the second build asked the model");
    let texts: Vec<&str> = sent
        .messages
        .iter()
        .flat_map(|m| m.texts.iter().map(String::as_str))
        .collect();
    let at = |needle: &str| {
        texts
            .iter()
            .position(|t| t.contains(needle))
            .unwrap_or_else(|| panic!("no message with {needle:?} in {texts:#?}"))
    };
    assert!(
        at("Kept first build") < at("Kept second build"),
        "{texts:#?}"
    );
    assert!(
        texts.iter().any(|t| t.contains("kept first done")),
        "{texts:#?}"
    );

    let mut req = request("@@reply never", &two);
    req.session_id = Some("ses_notkepthere".into());
    req.session_dir = Some(store);
    let err = run(&env.agent, req).await.result.expect_err("not kept");
    assert_eq!(err.code(), "session_not_found", "{err}");
}

async fn model_error_is_a_failed_result_with_the_reason(env: Arc<Env>) {
    let dir = env.workdir("model-error");
    let out = run(&env.agent, request("@@error 400 scripted failure", &dir)).await;
    let r = out.ok();
    assert_eq!(r.status, AgentStatus::Failed, "{r:?}");
    assert!(r.output.contains("scripted failure"), "{r:?}");
    assert!(out.events.iter().any(
        |e| matches!(e, AgentEvent::Error { message } if message.contains("scripted failure"))
    ));
}

async fn turn_limit_stops_the_run(env: Arc<Env>) {
    let dir = env.workdir("turn-limit");
    let mut req = request(
        "@@bash echo 1\n@@bash echo 2\n@@bash echo 3\n@@reply end",
        &dir,
    );
    req.max_turns = Some(1);
    let out = run(&env.agent, req).await;
    let r = out.ok();
    assert_eq!(r.status, AgentStatus::Failed, "{r:?}");
    assert!(r.output.contains("more than 1 model turns"), "{r:?}");
}

async fn wrong_password_is_an_http_error_with_method_path_and_status(env: Arc<Env>) {
    let (url, _) = env
        .agent
        .server()
        .unwrap()
        .wait_ready(HANG_GUARD)
        .await
        .unwrap();
    let agent = OpenCodeAgent::connect(OpenCodeConfig {
        url: Some(url.to_string()),
        password: Some(SecretString::new("wrong-password")),
        ..OpenCodeConfig::default()
    })
    .unwrap();
    let out = run(&agent, request("@@reply hi", &env.workdir("bad-auth"))).await;
    let err = out.result.expect_err("must fail");
    assert_eq!(err.code(), "agent_http_error");
    let text = err.to_string();
    for part in ["GET", "/global/health", "401"] {
        assert!(text.contains(part), "{text}");
    }
    assert!(!text.contains("wrong-password"), "{text}");
    assert!(matches!(err, AgentError::Http { status: 401, .. }));
}
