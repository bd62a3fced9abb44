//! End to end with everything real except the model and Woodpecker: `POST
//! /project/{name}/build` -> worker -> the real `claude` CLI against the scripted model ->
//! commit and push to a bare git remote -> the fake Woodpecker's pipeline -> a signed
//! callback to a real HTTP receiver. On SQLite and on PostgreSQL.

use std::{path::Path, process::Command, sync::Arc, time::Duration};

use rdev_core::SecretString;
use rdev_server::{callbacks::signing::verify, config::WoodpeckerConfig};
use rdev_testkit::{
    claude_bin, claude_env,
    git::{git, remote_head},
    pg::PgDatabase,
    woodpecker::FakeWoodpecker,
    CallbackReceiver, ReceivedCallback, ScriptedModel, TEST_API_KEY,
};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::common::{self, spawn_app_configured, TestApp};

const WP_TOKEN: &str = "wp-test-token";

pub(crate) struct World {
    pub(crate) app: TestApp,
    pub(crate) model: ScriptedModel,
    pub(crate) woodpecker: Arc<FakeWoodpecker>,
    pub(crate) receiver: CallbackReceiver,
    pub(crate) remote: String,
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) forge: CancellationToken,
}

impl Drop for World {
    fn drop(&mut self) {
        self.forge.cancel();
    }
}

/// Plays the forge's push webhook: every new head of `main` gets a Woodpecker pipeline that
/// runs and succeeds.
fn forge_hook(remote: String, wp: Arc<FakeWoodpecker>, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut seen = remote_head(&remote);
        while !stop.is_cancelled() {
            let head = remote_head(&remote);
            if head != seen {
                if let Some(sha) = &head {
                    let n = wp.add_pipeline(1, sha, "main");
                    wp.script(1, n, &["running", "success"]);
                }
                seen = head;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

pub(crate) async fn world(pg: bool) -> World {
    world_with(pg, false).await
}

async fn world_with(pg: bool, opencode: bool) -> World {
    world_tweaked(pg, opencode, |_| {}).await
}

async fn world_tweaked(
    pg: bool,
    opencode: bool,
    tweak: impl FnOnce(&mut rdev_server::Config) + Send + 'static,
) -> World {
    let dir = tempfile::tempdir().unwrap();
    let remote = dir.path().join("site.git").to_string_lossy().into_owned();
    git(&["init", "--bare", "--quiet", "-b", "main", &remote]);
    let model = ScriptedModel::start().await.unwrap();
    let woodpecker = Arc::new(FakeWoodpecker::start(WP_TOKEN).await.unwrap());
    woodpecker.add_repo(1);
    let receiver = CallbackReceiver::start().await.unwrap();
    let url = if pg {
        Some(PgDatabase::create().await)
    } else {
        None
    };
    let (base, wp_url) = (model.base_url(), woodpecker.url());
    let state = dir.path().join("claude-state");
    let oc = opencode.then(|| common::opencode_config(&model.base_url(), "test-key", dir.path()));
    let app = spawn_app_configured(url, move |c| {
        c.worker_concurrency = 1;
        c.allow_private_callbacks = true;
        c.woodpecker = Some(WoodpeckerConfig {
            url: wp_url,
            token: SecretString::new(WP_TOKEN),
            appear_timeout_secs: 30,
            pipeline_timeout_secs: 60,
            poll_ms: 50,
        });
        if let Some(oc) = oc {
            c.agents.enabled = vec!["claude-code".into(), "opencode".into()];
            c.agents.opencode = oc;
        }
        let cc = &mut c.agents.claude_code;
        cc.bin = Some(claude_bin());
        cc.config_root = Some(state);
        cc.env = claude_env(&base, TEST_API_KEY);
        tweak(c);
    })
    .await;
    let forge = CancellationToken::new();
    forge_hook(remote.clone(), Arc::clone(&woodpecker), forge.clone());
    World {
        app,
        model,
        woodpecker,
        receiver,
        remote,
        _dir: dir,
        forge,
    }
}

async fn create_project(w: &World) -> SecretString {
    let r = reqwest::Client::new()
        .post(format!("{}/projects", w.app.address))
        .json(
            &json!({"name": "site", "repo_url": w.remote, "woodpecker_repo_id": 1,
                      "deploy_url_pattern": "https://{project}.example.com"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    SecretString::new(
        body["webhook_secret"]
            .as_str()
            .expect("webhook secret shown once"),
    )
}

pub(crate) async fn build(w: &World, body: Value) -> String {
    let r = reqwest::Client::new()
        .post(format!("{}/project/site/build", w.app.address))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    r.json::<Value>().await.unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub(crate) async fn task(w: &World, id: &str) -> Value {
    reqwest::get(format!("{}/tasks/{id}", w.app.address))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits until the agent of task `id` runs: the model has served a step of its script.
async fn agent_started(w: &World, id: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !w.model.requests().iter().any(|r| r.step.is_some()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "agent never started: {}",
            task(w, id).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until task `id`'s callback row records its delivery (after which the dispatcher
/// never sends it again) and returns the task.
async fn delivered(w: &World, id: &str) -> Value {
    delivered_within(w, id, Duration::from_secs(30)).await
}

/// [`delivered`] with its own deadline (a build that still has to run first).
pub(crate) async fn delivered_within(w: &World, id: &str, timeout: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let t = task(w, id).await;
        if t["callbacks"][0]["delivered_at"].is_string() {
            return t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "delivery never recorded: {t}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits up to `timeout` for the single callback of task `id` and checks that it is signed
/// with the project's `secret`.
async fn signed_callback(
    w: &World,
    id: &str,
    secret: &SecretString,
    timeout: Duration,
) -> ReceivedCallback {
    let got = w.receiver.wait_for_accepted(1, timeout).await;
    assert_eq!(
        got.len(),
        1,
        "callback delivered; task: {}",
        task(w, id).await
    );
    let cb = got.into_iter().next().unwrap();
    verify(
        secret,
        cb.webhook_id.as_deref().unwrap(),
        cb.webhook_timestamp.as_deref().unwrap(),
        cb.webhook_signature.as_deref().unwrap(),
        &cb.body,
        chrono::Utc::now().timestamp(),
    )
    .expect("callback signature verifies with the project's secret");
    cb
}

async fn deployed_build_reaches_the_remote_ci_and_callback(pg: bool) {
    let w = world(pg).await;
    let secret = create_project(&w).await;
    let prompt = "Create the landing page.\n@@write hello.html\n<h1>Hello from rdev</h1>\n@@end\n@@bash echo built > build.txt\n@@reply The page is ready.";
    let id = build(&w, json!({"prompt": prompt, "template": "static-site",
        "variables": {"title": "Rdev Site"}, "auto_deploy": true, "callback_url": w.receiver.url()})).await;

    let cb = signed_callback(&w, &id, &secret, Duration::from_secs(120)).await;
    let body = cb.json();
    assert_eq!(body["task_id"], id);
    assert_eq!(body["status"], "completed", "{body}");
    let head = remote_head(&w.remote).expect("pushed");
    assert_eq!(body["result"]["artifacts"]["commit_sha"], head.as_str());
    assert_eq!(
        body["result"]["artifacts"]["deploy_url"],
        "https://site.example.com"
    );
    assert!(body["result"]["output"]
        .as_str()
        .unwrap()
        .contains("The page is ready."));
    assert!(body["duration_ms"].as_u64().is_some());

    // The pushed commit holds the agent's files on top of the rendered template.
    assert_eq!(
        git(&["--git-dir", &w.remote, "show", "main:hello.html"]),
        "<h1>Hello from rdev</h1>"
    );
    assert_eq!(
        git(&["--git-dir", &w.remote, "show", "main:build.txt"]),
        "built"
    );
    assert!(
        git(&["--git-dir", &w.remote, "ls-tree", "--name-only", "main"])
            .contains(".woodpecker.yaml")
    );
    let msg = git(&["--git-dir", &w.remote, "log", "-1", "--format=%B", "main"]);
    assert!(msg.contains(&format!("Rdev-Task: {id}")), "{msg}");

    let t = task(&w, &id).await;
    assert_eq!(t["status"], "completed");
    assert_eq!(t["result"]["agent"]["pipeline"]["status"], "success");
    // The receiver answered before the dispatcher recorded the delivery: wait for it.
    delivered(&w, &id).await;
    let events = w
        .app
        .client()
        .get_text(&format!("/tasks/{id}/events"))
        .await;
    assert!(events.contains("event: tool_use"), "{events}");
    assert!(events.contains("event: end"));
    assert!(!w.model.requests().is_empty());
    let metrics = reqwest::get(format!("{}/metrics", w.app.address))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("rdev_build_duration_seconds_count{status=\"completed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rdev_tasks{status=\"completed\"} 1"),
        "{metrics}"
    );
    assert!(
        w.woodpecker.requests().iter().all(|r| r.authorized),
        "every CI call carried the token"
    );
}

#[tokio::test]
async fn deployed_build_end_to_end_on_sqlite() {
    deployed_build_reaches_the_remote_ci_and_callback(false).await;
}

#[tokio::test]
async fn deployed_build_end_to_end_on_postgres() {
    deployed_build_reaches_the_remote_ci_and_callback(true).await;
}

#[tokio::test]
async fn build_without_changes_completes_without_a_commit() {
    let w = world(false).await;
    create_project(&w).await;
    let id = build(&w, json!({"prompt": "@@reply Nothing to do.", "auto_deploy": true, "callback_url": w.receiver.url()})).await;
    let got = w
        .receiver
        .wait_for_accepted(1, Duration::from_secs(120))
        .await;
    assert_eq!(got.len(), 1, "{}", task(&w, &id).await);
    let body = got[0].json();
    assert_eq!(body["status"], "completed");
    assert_eq!(body["result"]["artifacts"]["commit_sha"], Value::Null);
    assert!(body["result"]["output"]
        .as_str()
        .unwrap()
        .contains("no changes"));
    assert_eq!(remote_head(&w.remote), None, "nothing was pushed");
}

#[tokio::test]
async fn cancel_mid_run_kills_the_agent_and_pushes_nothing() {
    let w = world(false).await;
    create_project(&w).await;
    let id = build(&w, json!({"prompt": "@@write a.txt\nx\n@@end\n@@sleep 60000\n@@reply late", "auto_deploy": true,
        "callback_url": w.receiver.url()})).await;
    // Wait until the agent is running: the model has served the script's first step.
    agent_started(&w, &id).await;
    let r = reqwest::Client::new()
        .post(format!("{}/tasks/{id}/cancel", w.app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = w
        .receiver
        .wait_for_accepted(1, Duration::from_secs(60))
        .await;
    assert_eq!(got[0].json()["status"], "cancelled");
    let t = delivered(&w, &id).await;
    assert_eq!(t["status"], "cancelled");
    assert_eq!(w.receiver.accepted().len(), 1, "exactly one callback");
    assert_eq!(
        remote_head(&w.remote),
        None,
        "a cancelled build pushes nothing"
    );
    assert!(!Path::new(&w.remote).join("refs/heads/main").exists());
}

/// Deleting a project whose build runs on this node stops the agent (it would otherwise
/// sleep for a minute), pushes nothing, and sends no callback: the row is given up, since
/// the signing secret went with the project. The repository given as `repo_url` stays.
#[tokio::test]
async fn deleting_the_project_mid_run_stops_the_agent_and_keeps_the_users_repository() {
    let w = world(false).await;
    create_project(&w).await;
    let id = build(&w, json!({"prompt": "@@write a.txt\nx\n@@end\n@@sleep 60000\n@@reply late", "auto_deploy": true,
        "callback_url": w.receiver.url()})).await;
    agent_started(&w, &id).await;
    let marker = w._dir.path().to_string_lossy().into_owned();
    assert!(
        !processes_with_env_mentioning(&marker).is_empty(),
        "the agent runs"
    );
    let r = reqwest::Client::new()
        .delete(format!("{}/projects/site", w.app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["cancelled_tasks"], json!([id]), "{report}");
    assert_eq!(report["repository"]["outcome"], "kept", "{report}");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = processes_with_env_mentioning(&marker);
        if left.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "agent processes outlived the project: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t = task(&w, &id).await;
    assert_eq!(t["status"], "cancelled", "{t}");
    let cb = &t["callbacks"][0];
    assert!(cb["expired_at"].is_string(), "{t}");
    assert_eq!(cb["attempts"], 0, "never sent: {t}");
    assert!(cb["last_error"]
        .as_str()
        .unwrap()
        .contains("project deleted"));
    assert_eq!(
        remote_head(&w.remote),
        None,
        "a cancelled build pushes nothing"
    );
    assert!(
        Path::new(&w.remote).join("HEAD").is_file(),
        "the user's repository stays"
    );
}

#[tokio::test]
async fn deployed_build_with_opencode() {
    let mut w = world_with(false, true).await;
    let secret = create_project(&w).await;
    let prompt = "@@write from-opencode.txt\nwritten by opencode\n@@end\n@@reply ok";
    let id = build(
        &w,
        json!({"prompt": prompt, "provider": "opencode", "auto_deploy": true,
        "callback_url": w.receiver.url()}),
    )
    .await;
    let cb = signed_callback(&w, &id, &secret, Duration::from_secs(240)).await;
    let body = cb.json();
    assert_eq!(body["status"], "completed", "{body}");
    assert_eq!(body["result"]["agent"]["provider"], "opencode");
    let head = remote_head(&w.remote).expect("pushed");
    assert_eq!(body["result"]["artifacts"]["commit_sha"], head.as_str());
    assert_eq!(
        git(&["--git-dir", &w.remote, "show", "main:from-opencode.txt"]),
        "written by opencode"
    );

    // The supervised `opencode serve` is stopped with rdev: no process that carries this
    // test's directory in its environment survives a graceful shutdown.
    let marker = w._dir.path().to_string_lossy().into_owned();
    w.app.shutdown.cancel();
    (&mut w.app.handle).await.unwrap().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = processes_with_env_mentioning(&marker);
        if left.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still running after shutdown: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Secrets injected into a build never come back out: not in stored events, not in the
/// callback, not in any process's arguments while the agent runs.
#[tokio::test]
async fn injected_secret_is_redacted_from_events_callback_and_argv() {
    const SECRET: &str = "s3cr3t-Deploy-Value-8842";
    let w = world(false).await;
    project_with_deploy_token(&w, SECRET).await;

    // The agent prints the variable, dumps its environment, and its final answer quotes the
    // value (as a careless agent might).
    let prompt = format!(
        "@@bash echo token=$DEPLOY_TOKEN; env | grep DEPLOY_TOKEN; sleep 2\n@@reply the token is {SECRET}"
    );
    let id = build(
        &w,
        json!({"prompt": prompt, "callback_url": w.receiver.url()}),
    )
    .await;

    // While the agent runs, no process shows the value in its arguments.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut saw_running = false;
    while tokio::time::Instant::now() < deadline && w.receiver.accepted().is_empty() {
        let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
        let ps = String::from_utf8_lossy(&ps.stdout);
        assert!(!ps.contains(SECRET), "the secret is visible in ps");
        saw_running |= ps.contains("sleep 2");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(saw_running, "ps was sampled while the agent's command ran");

    let got = w
        .receiver
        .wait_for_accepted(1, Duration::from_secs(120))
        .await;
    assert_eq!(got.len(), 1, "{}", task(&w, &id).await);
    let body = String::from_utf8_lossy(&got[0].body).into_owned();
    assert!(!body.contains(SECRET), "callback leaks: {body}");
    assert!(body.contains("[redacted]"), "{body}");
    assert_eq!(got[0].json()["status"], "completed");

    let events = w
        .app
        .client()
        .get_text(&format!("/tasks/{id}/events"))
        .await;
    assert!(
        events.contains("token=[redacted]"),
        "the tool output was stored, redacted: {events}"
    );
    assert!(!events.contains(SECRET), "events leak the secret");
    // The stored result is redacted too (the prompt is the client's own input and stays).
    let t = task(&w, &id).await;
    assert_eq!(t["result"]["output"], "the token is [redacted]", "{t}");
}

#[tokio::test]
async fn callback_receiver_down_then_up_gets_the_result_once() {
    let w = world(false).await;
    create_project(&w).await;
    w.receiver.fail_with(503);
    let id = build(
        &w,
        json!({"prompt": "@@reply all good", "callback_url": w.receiver.url()}),
    )
    .await;
    // At least two refused deliveries while the receiver is down, visible on the task.
    let refused = w
        .receiver
        .wait_for_received(2, Duration::from_secs(120))
        .await;
    assert!(refused.len() >= 2, "no retry: {}", task(&w, &id).await);
    let t = task(&w, &id).await;
    assert!(t["callbacks"][0]["attempts"].as_u64().unwrap() >= 1, "{t}");
    assert!(
        t["callbacks"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("503"),
        "{t}"
    );
    w.receiver.recover();
    let got = w
        .receiver
        .wait_for_accepted(1, Duration::from_secs(120))
        .await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["task_id"], id);
    delivered(&w, &id).await;
    assert_eq!(w.receiver.accepted().len(), 1, "delivered exactly once");
    let ids: std::collections::BTreeSet<_> = w
        .receiver
        .received()
        .into_iter()
        .map(|c| c.webhook_id.expect("every delivery carries a webhook-id"))
        .collect();
    assert_eq!(ids.len(), 1, "every retry carried the same webhook-id");
}

/// Pids of live (non-zombie) processes whose environment mentions `needle`.
fn processes_with_env_mentioning(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        {
            continue;
        }
        let env = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        if String::from_utf8_lossy(&env).contains(needle) {
            out.push(pid);
        }
    }
    out
}

/// A lease that expires under a live attempt (here: reaped by a store whose clock is
/// ahead) makes this node claim the task again while the old attempt still runs.
/// The old attempt must stop without touching the new one's bookkeeping: the new attempt
/// keeps its heartbeat through a run longer than the lease and completes as attempt 2.
#[tokio::test]
async fn lease_expired_under_a_live_attempt_lets_the_new_attempt_finish() {
    let w = world_tweaked(false, false, |c| {
        c.worker_concurrency = 2;
        c.worker_lease_secs = 3;
    })
    .await;
    create_project(&w).await;
    let prompt = "@@write a.txt\nx\n@@end\n@@sleep 7000\n@@reply done";
    let id = build(&w, json!({"prompt": prompt, "auto_deploy": true})).await;
    agent_started(&w, &id).await;
    let url = format!("sqlite:{}", w.app._dir.path().join("rdev.db").display());
    // Past the 3 s lease, and not so far ahead that the retry backoff (counted from this
    // clock) keeps the task from the real worker for long.
    let ahead = rdev_core::ManualClock::new(chrono::Utc::now() + chrono::Duration::seconds(5));
    let other = rdev_store::SqlStore::with_clock(
        rdev_store::Db::connect(&url).await.unwrap(),
        rdev_store::StoreConfig::default(),
        Arc::new(ahead),
    )
    .await
    .unwrap();
    let reaped = rdev_core::WorkQueue::reap_expired(&other).await.unwrap();
    assert_eq!(reaped.requeued.len(), 1, "{reaped:?}");
    other.shutdown();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let t = loop {
        let t = task(&w, &id).await;
        if matches!(t["status"].as_str(), Some("completed" | "failed")) {
            break t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never finished: {t}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(t["status"], "completed", "{t}");
    assert_eq!(t["attempt"], 2, "the second attempt finished: {t}");
    let log = git(&["--git-dir", &w.remote, "log", "--format=%H", "main"]);
    assert_eq!(log.lines().count(), 1, "one commit pushed: {log}");
}

/// The injected secret of the push protection tests: long enough to be looked for, and
/// with characters that base64 and percent-encoding change.
const PUSHED_SECRET: &str = "pp-Deploy/Value+7731-not-for-git";

/// Creates project `site` on `w`'s remote with the secret `DEPLOY_TOKEN` = `value`
/// injected under that name (and no CI).
async fn project_with_deploy_token(w: &World, value: &str) {
    let c = reqwest::Client::new();
    let r = c
        .post(format!("{}/projects", w.app.address))
        .json(&json!({"name": "site", "repo_url": w.remote,
            "secrets": {"env": [["DEPLOY_TOKEN", "DEPLOY_TOKEN"]]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = c
        .put(format!(
            "{}/secrets/project:site/DEPLOY_TOKEN",
            w.app.address
        ))
        .json(&json!({"value": value}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
}

/// Runs an `auto_deploy` build of `prompt` to its end; returns the task, its callback's
/// body and its stored events (as the SSE stream shows them).
async fn deploy_build(w: &World, prompt: &str) -> (Value, String, String) {
    let id = build(
        w,
        json!({"prompt": prompt, "auto_deploy": true, "callback_url": w.receiver.url()}),
    )
    .await;
    let t = delivered_within(w, &id, Duration::from_secs(120)).await;
    let callback = w
        .receiver
        .accepted()
        .into_iter()
        .find(|c| c.json()["task_id"] == id.as_str())
        .expect("the task's callback");
    let events = w
        .app
        .client()
        .get_text(&format!("/tasks/{id}/events"))
        .await;
    (t, String::from_utf8(callback.body).unwrap(), events)
}

/// Asserts that a build was stopped by push protection naming `finding`, and that neither
/// the callback nor the error holds the secret.
fn assert_blocked(t: &Value, callback: &str, events: &str, finding: &str) {
    assert_eq!(t["status"], "failed", "{t}");
    assert_eq!(t["attempt"], 1, "not retried: {t}");
    let error = t["error"].as_str().unwrap();
    assert!(error.starts_with("secret_in_commit: "), "{error}");
    assert!(error.contains(finding), "{finding} not in {error}");
    assert!(error.contains("nothing was pushed"), "{error}");
    let body: Value = serde_json::from_str(callback).unwrap();
    assert_eq!(body["status"], "failed");
    assert_eq!(body["error"], error);
    assert!(events.contains("\"step\":\"push_protection\""), "{events}");
    assert!(events.contains("\"outcome\":\"blocked\""), "{events}");
    assert!(
        !events.contains("\"step\":\"push\""),
        "no push step: {events}"
    );
    for text in [error, callback, events] {
        for form in secret_forms() {
            assert!(!text.contains(&form), "{form} leaks: {text}");
        }
    }
}

/// The secret as written and in base64, as they would show up in a leak.
fn secret_forms() -> Vec<String> {
    use base64::Engine;
    vec![
        PUSHED_SECRET.to_owned(),
        base64::engine::general_purpose::STANDARD.encode(PUSHED_SECRET),
    ]
}

/// Every row of every table of the test's database, as text.
async fn every_stored_row(w: &World) -> String {
    use sqlx::Row;
    let mut out = String::new();
    if let Some(pg) = &w.app._pg {
        let pool = sqlx::PgPool::connect(&pg.url).await.unwrap();
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema()",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert!(tables.iter().any(|t| t == "task_events"), "{tables:?}");
        for table in tables {
            let rows = sqlx::query(&format!("SELECT t::text FROM \"{table}\" t"))
                .fetch_all(&pool)
                .await
                .unwrap();
            for row in rows {
                out.push_str(&row.get::<String, _>(0));
                out.push('\n');
            }
        }
        pool.close().await;
    } else {
        let url = format!("sqlite:{}", w.app._dir.path().join("rdev.db").display());
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert!(tables.iter().any(|t| t == "task_events"), "{tables:?}");
        for table in tables {
            let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info(?)")
                .bind(&table)
                .fetch_all(&pool)
                .await
                .unwrap();
            let quoted: Vec<String> = columns.iter().map(|c| format!("quote(\"{c}\")")).collect();
            let sql = format!("SELECT {} FROM \"{table}\"", quoted.join(" || ' ' || "));
            for row in sqlx::query(&sql).fetch_all(&pool).await.unwrap() {
                out.push_str(&row.get::<String, _>(0));
                out.push('\n');
            }
        }
        pool.close().await;
    }
    out
}

/// Push protection with the real `claude` CLI: the injected secret written to a file, its
/// base64, and a freshly generated private key each stop the push (`secret_in_commit`,
/// remote unchanged, not retried, nothing of the value stored or sent); a harmless change
/// is pushed; with `push_protection = "warn"` the secret is pushed and the finding recorded.
async fn push_protection_stops_secrets_before_they_reach_the_remote(pg: bool) {
    let w = world(pg).await;
    project_with_deploy_token(&w, PUSHED_SECRET).await;

    // The first push of an empty repository is scanned against the empty tree.
    let (t, cb, ev) = deploy_build(
        &w,
        "@@bash mkdir -p notes && echo \"$DEPLOY_TOKEN\" > notes/token.txt\n@@reply saved",
    )
    .await;
    assert_blocked(
        &t,
        &cb,
        &ev,
        "notes/token.txt:1 known_value DEPLOY_TOKEN (plain)",
    );
    assert_eq!(remote_head(&w.remote), None, "nothing was pushed");

    let (t, cb, ev) = deploy_build(
        &w,
        "@@bash printf %s \"$DEPLOY_TOKEN\" | base64 > token.b64\n@@reply encoded",
    )
    .await;
    assert_blocked(
        &t,
        &cb,
        &ev,
        "token.b64:1 known_value DEPLOY_TOKEN (base64)",
    );
    assert_eq!(remote_head(&w.remote), None, "nothing was pushed");

    let have_keygen = Command::new("sh")
        .args(["-c", "command -v ssh-keygen"])
        .output()
        .is_ok_and(|o| o.status.success());
    let keygen = if have_keygen {
        "@@bash ssh-keygen -q -t ed25519 -N '' -C rdev-test -f deploy_key\n@@reply made a key"
            .to_owned()
    } else {
        let body: String = (0..5)
            .map(|i| format!("{}\n", format!("{i}Qk").repeat(23)))
            .collect();
        let (begin, end) = (
            "-----BEGIN OPENSSH PRIVATE KEY-----",
            "-----END OPENSSH PRIVATE KEY-----",
        );
        format!("@@write deploy_key\n{begin}\n{body}{end}\n@@end\n@@reply made a key")
    };
    let (t, cb, ev) = deploy_build(&w, &keygen).await;
    assert_blocked(&t, &cb, &ev, "deploy_key:1 private-key");
    assert_eq!(remote_head(&w.remote), None, "nothing was pushed");

    // The same kind of build without a secret goes through.
    let (t, cb, ev) = deploy_build(
        &w,
        "@@write index.html\n<h1>Hello</h1>\n@@end\n@@reply page ready",
    )
    .await;
    assert_eq!(t["status"], "completed", "{t}");
    let head = remote_head(&w.remote).expect("pushed");
    assert_eq!(t["result"]["artifacts"]["commit_sha"], head.as_str());
    assert!(ev.contains("\"outcome\":\"clean\""), "{ev}");
    assert!(t["result"].get("push_protection").is_none(), "{t}");
    assert!(!cb.contains("secret_in_commit"), "{cb}");

    // warn: pushed, with the finding on the task, its events and its callback.
    let r = reqwest::Client::new()
        .patch(format!("{}/projects/site", w.app.address))
        .json(&json!({"push_protection": "warn"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (t, cb, ev) = deploy_build(
        &w,
        "@@bash echo \"token=$DEPLOY_TOKEN\" > config.txt\n@@reply configured",
    )
    .await;
    assert_eq!(t["status"], "completed", "{t}");
    let pushed = remote_head(&w.remote).expect("pushed");
    assert_ne!(pushed, head);
    assert_eq!(
        git(&["--git-dir", &w.remote, "show", "main:config.txt"]),
        format!("token={PUSHED_SECRET}"),
        "warn mode pushes"
    );
    let finding = &t["result"]["push_protection"]["findings"][0];
    assert_eq!(
        (
            &finding["path"],
            &finding["line"],
            &finding["rule"],
            &finding["secret"]
        ),
        (
            &json!("config.txt"),
            &json!(1),
            &json!("known_value"),
            &json!("DEPLOY_TOKEN")
        ),
        "{t}"
    );
    assert!(ev.contains("\"outcome\":\"warned\""), "{ev}");
    let body: Value = serde_json::from_str(&cb).unwrap();
    assert_eq!(
        body["result"]["push_protection"]["findings"][0]["path"],
        "config.txt"
    );

    // Nothing rdev stored or sent holds the value, in any of its forms.
    let rows = every_stored_row(&w).await;
    assert!(rows.contains("secret_in_commit"), "the rows were read");
    for form in secret_forms() {
        assert!(!rows.contains(&form), "a stored row holds {form}");
        for c in w.receiver.received() {
            assert!(
                !String::from_utf8_lossy(&c.body).contains(&form),
                "a callback holds {form}"
            );
        }
    }
}

#[tokio::test]
async fn push_protection_on_sqlite() {
    push_protection_stops_secrets_before_they_reach_the_remote(false).await;
}

#[tokio::test]
async fn push_protection_on_postgres() {
    push_protection_stops_secrets_before_they_reach_the_remote(true).await;
}
