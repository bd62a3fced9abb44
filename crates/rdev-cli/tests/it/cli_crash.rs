//! Crash safety with real processes: `kill -9` the rdev process while its agent runs, or
//! after its push while it follows CI; a new rdev on the same PostgreSQL retries the task
//! after the lease expires, and the work is pushed exactly once and reported by exactly one
//! callback.

use std::{path::Path, process::Command, time::Duration};

use rdev_testkit::{
    agent_env::env_toml,
    claude_bin, claude_env,
    git::{git, remote_head},
    pg::PgDatabase,
    woodpecker::FakeWoodpecker,
    CallbackReceiver, ScriptedModel, TEST_API_KEY,
};
use serde_json::{json, Value};

use crate::common::{self, serve};

fn write_config(dir: &Path, db: &str, model: &str) -> std::path::PathBuf {
    let path = dir.join("rdev.toml");
    let toml = format!(
        r#"database_url = "{db}"
data_dir = "{data}"
worker_concurrency = 1
worker_lease_secs = 3
allow_private_callbacks = true
shutdown_grace_secs = 2

[agents]
enabled = ["claude-code"]

[agents.claude_code]
bin = "{bin}"
config_root = "{state}"

[agents.claude_code.env]
{env}"#,
        env = env_toml(&claude_env(model, TEST_API_KEY)),
        data = dir.join("data").display(),
        bin = claude_bin().display(),
        state = dir.join("claude-state").display(),
    );
    std::fs::write(&path, toml).unwrap();
    path
}

/// POSTs a build and returns its task id.
async fn queue_build(c: &reqwest::Client, server: &str, body: Value) -> String {
    let r = c
        .post(format!("{server}/project/site/build"))
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

/// `kill -9` of a running rdev.
fn kill_hard(server: common::Server) {
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap()
        .success());
    drop(server);
}

/// Waits until the task's callback row records its delivery (after which it is never sent
/// again) and returns the task.
async fn delivered(c: &reqwest::Client, task_url: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let task: Value = c.get(task_url).send().await.unwrap().json().await.unwrap();
        if task["callbacks"][0]["delivered_at"].is_string() {
            return task;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "delivery never recorded: {task}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_rdev_mid_run_retries_the_task_and_pushes_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = PgDatabase::create().await;
    let model = ScriptedModel::start().await.unwrap();
    let receiver = CallbackReceiver::start().await.unwrap();
    let remote = dir.path().join("site.git").to_string_lossy().into_owned();
    git(&["init", "--bare", "--quiet", "-b", "main", &remote]);
    let config = write_config(dir.path(), &db.url, &model.base_url());

    let first = serve(dir.path(), Some(&config));
    let c = reqwest::Client::new();
    let r = c
        .post(format!("{}/projects", first.url))
        .json(&json!({"name": "site", "repo_url": remote}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let prompt =
        "@@write one.txt\nfirst\n@@end\n@@sleep 2000\n@@bash echo second > two.txt\n@@reply done";
    let id = queue_build(
        &c,
        &first.url,
        json!({"prompt": prompt, "auto_deploy": true, "callback_url": receiver.url()}),
    )
    .await;

    // Kill -9 as soon as the agent is mid-run (the model served its first step).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while !model.requests().iter().any(|r| r.step == Some(0)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    kill_hard(first);
    assert_eq!(
        remote_head(&remote),
        None,
        "nothing was pushed by the killed process"
    );

    // A fresh process on the same database takes the task over once its lease expires.
    let second = serve(dir.path(), Some(&config));
    let got = receiver
        .wait_for_accepted(1, Duration::from_secs(150))
        .await;
    let task = delivered(&c, &format!("{}/tasks/{id}", second.url)).await;
    assert_eq!(got.len(), 1, "callback delivered: {task}");
    assert_eq!(got[0].json()["status"], "completed", "{task}");
    assert_eq!(receiver.accepted().len(), 1, "exactly one callback");

    let with_trailer = git(&[
        "--git-dir",
        &remote,
        "log",
        "main",
        "--format=%H",
        &format!("--grep=^Rdev-Task: {id}$"),
    ]);
    assert_eq!(with_trailer.lines().count(), 1, "pushed exactly once");
    assert_eq!(
        git(&["--git-dir", &remote, "show", "main:one.txt"]),
        "first"
    );
    assert_eq!(
        git(&["--git-dir", &remote, "show", "main:two.txt"]),
        "second"
    );
    assert_eq!(
        got[0].json()["result"]["artifacts"]["commit_sha"],
        with_trailer.trim()
    );
    let attempts = task["attempts"].as_array().unwrap();
    assert!(attempts.len() >= 2, "the task ran again: {task}");
    assert_ne!(attempts[0]["outcome"], "completed", "{task}");
    assert_eq!(task["status"], "completed");
}

/// The window between the push and the task's completion: rdev is killed while it follows
/// the pushed commit's pipeline. The next rdev's attempt finds its commit on the remote by
/// the `Rdev-Task` trailer, does not run the agent or push again, follows CI to the end,
/// and exactly one callback is delivered.
#[tokio::test(flavor = "multi_thread")]
async fn killing_rdev_after_the_push_completes_the_task_without_pushing_again() {
    let dir = tempfile::tempdir().unwrap();
    let db = PgDatabase::create().await;
    let model = ScriptedModel::start().await.unwrap();
    let receiver = CallbackReceiver::start().await.unwrap();
    let woodpecker = FakeWoodpecker::start("wp-token").await.unwrap();
    woodpecker.add_repo(1);
    let remote = dir.path().join("site.git").to_string_lossy().into_owned();
    git(&["init", "--bare", "--quiet", "-b", "main", &remote]);
    let config = write_config(dir.path(), &db.url, &model.base_url());
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str(&format!(
        "\n[woodpecker]\nurl = \"{}\"\ntoken = \"wp-token\"\nappear_timeout_secs = 60\npipeline_timeout_secs = 120\npoll_ms = 100\n",
        woodpecker.url()
    ));
    std::fs::write(&config, toml).unwrap();

    let first = serve(dir.path(), Some(&config));
    let c = reqwest::Client::new();
    let r = c
        .post(format!("{}/projects", first.url))
        .json(&json!({"name": "site", "repo_url": remote, "woodpecker_repo_id": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = queue_build(
        &c,
        &first.url,
        json!({"prompt": "@@write page.txt\npushed once\n@@end\n@@reply done",
            "auto_deploy": true, "callback_url": receiver.url()}),
    )
    .await;

    // The push happened; its pipeline stays pending while rdev polls it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let head = loop {
        if let Some(head) = remote_head(&remote) {
            break head;
        }
        assert!(tokio::time::Instant::now() < deadline, "never pushed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let number = woodpecker.add_pipeline(1, &head, "main");
    let polled = |wp: &FakeWoodpecker| {
        wp.requests()
            .iter()
            .filter(|r| r.uri.contains(&format!("/pipelines/{number}")))
            .count()
    };
    while polled(&woodpecker) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "CI never followed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    kill_hard(first);
    let model_calls = model.requests().len();
    woodpecker.set_status(1, number, "success");

    let second = serve(dir.path(), Some(&config));
    let got = receiver
        .wait_for_accepted(1, Duration::from_secs(150))
        .await;
    assert_eq!(got.len(), 1, "callback delivered");
    let body = got[0].json();
    assert_eq!(body["status"], "completed", "{body}");
    assert_eq!(body["result"]["artifacts"]["commit_sha"], head.as_str());
    let task = delivered(&c, &format!("{}/tasks/{id}", second.url)).await;
    assert_eq!(receiver.accepted().len(), 1, "exactly one callback");
    assert_eq!(
        remote_head(&remote).as_deref(),
        Some(head.as_str()),
        "nothing pushed again"
    );
    let commits = git(&["--git-dir", &remote, "log", "main", "--format=%H"]);
    assert_eq!(commits.lines().count(), 1, "one commit: {commits}");
    assert_eq!(
        model.requests().len(),
        model_calls,
        "the agent did not run again"
    );
    assert!(task["attempts"].as_array().unwrap().len() >= 2, "{task}");
    assert_eq!(task["status"], "completed");
}
