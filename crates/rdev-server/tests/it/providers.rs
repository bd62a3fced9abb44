//! Provider readiness: `GET /agents` says whether each provider is `ready`,
//! `not_configured` or `unavailable` and why, `/readyz` fails when none is ready, a build on
//! a provider without model credentials is refused before anything is queued, and a queued
//! task whose provider lost its credentials fails with the same code instead of the CLI's
//! own words.

use std::{path::PathBuf, time::Duration};

use rdev_server::Config;
use rdev_testkit::git::git;
use serde_json::{json, Value};

use crate::common::{self, get_json, spawn_app_configured, wait_for_task};

/// Claude Code without any model credential, whatever rdev's own environment holds.
fn without_credentials(c: &mut Config) {
    c.agents.claude_code.env.clear();
    c.agents.claude_code.inherit_env = vec!["PATH".into(), "HOME".into()];
}

#[tokio::test]
async fn agents_report_ready_not_configured_and_unavailable_with_the_reason() {
    let app = spawn_app_configured(None, without_credentials).await;
    let body = get_json(&reqwest::Client::new(), format!("{}/agents", app.address)).await;
    let agent = &body["agents"][0];
    assert_eq!(agent["provider"], "claude-code", "{body}");
    assert_eq!(agent["default"], true, "{body}");
    assert_eq!(agent["capabilities"]["resume"], true, "{body}");
    assert_eq!(agent["sandbox"], "bubblewrap", "{body}");
    assert_eq!(agent["state"], "not_configured", "{body}");
    let reason = agent["reason"].as_str().unwrap();
    assert!(reason.contains("ANTHROPIC_API_KEY"), "{body}");
    let fix = agent["fix"].as_str().unwrap();
    assert!(
        fix.contains("RDEV_AGENTS__CLAUDE_CODE__ENV__ANTHROPIC_API_KEY"),
        "{body}"
    );

    let ready = spawn_app_configured(None, |_| {}).await;
    let body = get_json(&reqwest::Client::new(), format!("{}/agents", ready.address)).await;
    assert_eq!(body["agents"][0]["state"], "ready", "{body}");
    assert!(body["agents"][0].get("reason").is_none(), "{body}");

    let missing_cli = spawn_app_configured(None, |c| {
        c.agents.claude_code.bin = Some(PathBuf::from("/nonexistent/claude"));
    })
    .await;
    let body = get_json(
        &reqwest::Client::new(),
        format!("{}/agents", missing_cli.address),
    )
    .await;
    let agent = &body["agents"][0];
    assert_eq!(agent["state"], "unavailable", "{body}");
    assert!(
        agent["reason"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/claude"),
        "{body}"
    );
    assert!(
        agent["fix"].as_str().unwrap().contains("setup-tools"),
        "{body}"
    );
}

#[tokio::test]
async fn an_enabled_provider_that_cannot_be_set_up_is_listed_unavailable() {
    let app = spawn_app_configured(None, |c| {
        c.agents.enabled = vec!["claude-code".into(), "opencode".into()];
        // Refused by the adapter's own validation, so it is never registered.
        c.agents.opencode.model = Some("no-slash".into());
    })
    .await;
    let body = get_json(&reqwest::Client::new(), format!("{}/agents", app.address)).await;
    let agents = body["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 2, "{body}");
    assert_eq!(agents[0]["state"], "ready", "{body}");
    assert_eq!(agents[1]["provider"], "opencode", "{body}");
    assert_eq!(agents[1]["state"], "unavailable", "{body}");
    assert_eq!(agents[1]["default"], false, "{body}");
    assert!(agents[1]["capabilities"].is_null(), "{body}");
    assert!(
        agents[1]["reason"].as_str().unwrap().contains("no-slash"),
        "{body}"
    );

    let r = reqwest::get(format!("{}/readyz", app.address))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["providers"]["ready"], json!(["claude-code"]), "{body}");
    assert_eq!(
        body["providers"]["not_ready"]["opencode"]["state"], "unavailable",
        "{body}"
    );
}

#[tokio::test]
async fn readyz_fails_when_no_provider_is_ready() {
    let app = spawn_app_configured(None, without_credentials).await;
    let r = reqwest::get(format!("{}/readyz", app.address))
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "no_provider_ready", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("claude-code: not_configured"), "{message}");
}

#[tokio::test]
async fn a_build_without_model_credentials_is_refused_before_anything_is_queued() {
    let app = spawn_app_configured(None, without_credentials).await;
    let c = reqwest::Client::new();
    let r = c
        .post(format!("{}/projects", app.address))
        .json(&json!({"name": "site", "repo_url": "/srv/git/site.git"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    for body in [
        json!({"prompt": "Add a page"}),
        json!({"prompt": "Add a page", "provider": "claude-code"}),
    ] {
        let r = c
            .post(format!("{}/project/site/build", app.address))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{body}");
        let answer: Value = r.json().await.unwrap();
        assert_eq!(answer["error"]["code"], "agent_not_configured", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("claude-code")
                && message.contains("ANTHROPIC_API_KEY")
                && message.contains("RDEV_AGENTS__CLAUDE_CODE__ENV__ANTHROPIC_API_KEY"),
            "{message}"
        );
    }
    let tasks = get_json(&c, format!("{}/tasks", app.address)).await;
    assert_eq!(tasks["tasks"], json!([]), "nothing was queued: {tasks}");
}

/// Queued by a node that had credentials, claimed by one that has none: the task fails
/// with `agent_not_configured` before any agent starts.
#[tokio::test]
async fn a_task_whose_provider_lost_its_credentials_fails_with_agent_not_configured() {
    let dir = tempfile::tempdir().unwrap();
    let remote = dir.path().join("site.git").to_string_lossy().into_owned();
    git(&["init", "--bare", "--quiet", "-b", "main", &remote]);
    let db = format!("sqlite:{}", dir.path().join("rdev.db").display());
    let data = dir.path().join("data");
    let shared = |c: &mut Config| {
        c.database_url = db.clone();
        c.data_dir = data.clone();
    };
    let first = spawn_app_configured(None, shared).await;
    let c = reqwest::Client::new();
    let r = c
        .post(format!("{}/projects", first.address))
        .json(&json!({"name": "site", "repo_url": remote}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = common::start_build(&c, &first.address, "site", json!({"prompt": "x"})).await;
    first.shutdown.cancel();
    first.handle.await.unwrap().unwrap();

    let second = spawn_app_configured(None, |c| {
        shared(c);
        without_credentials(c);
        c.worker_concurrency = 1;
    })
    .await;
    let task = wait_for_task(&c, &second.address, &id, Duration::from_secs(60), |t| {
        t["status"] == "failed"
    })
    .await;
    assert_eq!(task["status"], "failed", "{task}");
    let error = task["error"].as_str().unwrap();
    assert!(
        error.starts_with("agent_not_configured: provider claude-code is not configured"),
        "{error}"
    );
    assert!(!error.contains("Not logged in"), "{error}");
}
