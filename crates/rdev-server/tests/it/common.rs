//! Shared test support: start the real application on port 0 with its own database.
#![allow(dead_code)]

use rdev_server::{Application, Config};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// A running rdev on a free port.
pub struct TestApp {
    pub address: String,
    pub shutdown: CancellationToken,
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub _dir: tempfile::TempDir,
    pub _pg: Option<rdev_testkit::pg::PgDatabase>,
}

/// Starts rdev on 127.0.0.1:0 with a fresh SQLite database (or `database_url` if given).
pub async fn spawn_app_with(pg: Option<rdev_testkit::pg::PgDatabase>) -> TestApp {
    spawn_app_configured(pg, |_| {}).await
}

/// Like [`spawn_app_with`], letting the test change the configuration first.
pub async fn spawn_app_configured(
    pg: Option<rdev_testkit::pg::PgDatabase>,
    tweak: impl FnOnce(&mut Config),
) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: pg
            .as_ref()
            .map(|p| p.url.clone())
            .unwrap_or_else(|| format!("sqlite:{}", dir.path().join("rdev.db").display())),
        data_dir: dir.path().join("data"),
        // API tests run no worker (no agent ever starts) unless a test asks for one.
        worker_concurrency: 0,
        ..Config::default()
    };
    config.agents.enabled = vec!["claude-code".into()];
    // A build on a provider without model credentials is refused (agent_not_configured);
    // these apps call no model unless a test points the agent at the scripted one.
    config.agents.claude_code.env.insert(
        "ANTHROPIC_API_KEY".into(),
        rdev_core::SecretString::new("test-key-not-real"),
    );
    tweak(&mut config);
    let app = Application::build(config).await.expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let shutdown = app.shutdown_token();
    let handle = tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        shutdown,
        handle,
        _dir: dir,
        _pg: pg,
    }
}

impl TestApp {
    /// A client for this app's API, without a token.
    pub fn client(&self) -> rdev_testkit::TestClient {
        rdev_testkit::TestClient::new(&self.address)
    }
}

/// Starts rdev on a fresh SQLite database.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(None).await
}

/// GETs `url` with `client` and parses the body as JSON, whatever the status.
pub async fn get_json(client: &reqwest::Client, url: impl reqwest::IntoUrl) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// POSTs a build of `project` and returns its task id, asserting it was queued (202).
pub async fn start_build(
    client: &reqwest::Client,
    address: &str,
    project: &str,
    body: Value,
) -> String {
    let r = client
        .post(format!("{address}/project/{project}/build"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{body}");
    r.json::<Value>().await.unwrap()["task_id"]
        .as_str()
        .expect("a task id")
        .to_owned()
}

/// GETs `/tasks/{id}` until `done` holds for the answer or `timeout` passes; returns the
/// last answer either way, for the caller to assert on.
pub async fn wait_for_task(
    client: &reqwest::Client,
    address: &str,
    id: &str,
    timeout: std::time::Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let task = get_json(client, format!("{address}/tasks/{id}")).await;
        if done(&task) || tokio::time::Instant::now() > deadline {
            return task;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Writes an OpenCode config whose Anthropic provider is `base_url` (the scripted model)
/// with `api_key`, and returns the adapter configuration for a supervised, offline
/// `opencode serve` keeping its state under `root`.
pub fn opencode_config(
    base_url: &str,
    api_key: &str,
    root: &std::path::Path,
) -> rdev_agents::opencode::OpenCodeConfig {
    let file = root.join("opencode.json");
    rdev_testkit::agent_env::write_opencode_config(&file, base_url, api_key);
    let mut oc = rdev_agents::opencode::OpenCodeConfig {
        bin: Some(rdev_testkit::opencode_bin()),
        availability_timeout: std::time::Duration::from_secs(120),
        ..Default::default()
    };
    oc.server.state_dir = Some(root.join("opencode-state"));
    oc.server.config_file = Some(file);
    for (k, v) in rdev_testkit::agent_env::opencode_offline_env() {
        oc.server
            .env
            .insert(k.to_owned(), rdev_core::SecretString::new(v));
    }
    oc
}

/// Makes `session` a session of `project` made by `provider`, as a completed build that
/// reported it would (for API tests, whose app runs no worker): a task of the project is
/// queued, claimed and completed through the app's own database.
pub async fn remember_session(app: &TestApp, project: &str, provider: &str, session: &str) {
    use rdev_core::{TaskStore, WorkQueue};
    let url = app._pg.as_ref().map_or_else(
        || format!("sqlite:{}", app._dir.path().join("rdev.db").display()),
        |p| p.url.clone(),
    );
    let db = rdev_store::Db::connect(&url).await.unwrap();
    let store = rdev_store::SqlStore::new(db, rdev_testkit::db::test_store_config())
        .await
        .unwrap();
    let name = rdev_core::ProjectName::parse(project).unwrap();
    let spec = rdev_core::BuildSpec::new("an earlier build");
    let id = store
        .create(rdev_core::NewTask::new(name, spec))
        .await
        .unwrap()
        .task
        .id;
    let lease = store
        .claim("test", 1, std::time::Duration::from_secs(30))
        .await
        .unwrap()
        .pop()
        .expect("nothing else is queued");
    assert_eq!(lease.task.id, id, "nothing else is queued");
    let mut result = rdev_core::BuildResult::default();
    result.agent.run = Some(rdev_core::AgentRun {
        provider: provider.to_owned(),
        session_id: Some(session.to_owned()),
        num_turns: 1,
        usage: rdev_core::Usage::default(),
        reported_cost_usd: None,
    });
    store.complete(&lease.key(), result).await.unwrap();
    store.shutdown();
}
