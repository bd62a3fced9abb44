//! Upstream keys in the credential store (`api_key_secret`, scope `gateway`): the gateway
//! reads the key when it forwards, a new version takes effect at the next call without a
//! restart, a key that cannot be read skips its upstream (a `key` failover), and the key's
//! value shows in no answer, task event or log line.

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use axum::{http::HeaderMap, routing::post, Router};
use rdev_core::{
    AuditAction, AuditFilter, BuildSpec, NewTask, ProjectName, SecretName, SecretScope,
    SecretString, Store,
};
use rdev_server::{
    config::UpstreamConfig,
    gateway::{Gateway, GrantSpec},
    metrics::Metrics,
    secrets::{KeySource, MasterKey, SecretService},
    Config,
};
use rdev_store::SqlSecretRepository;
use rdev_testkit::{db::Backend, TestDb};

const FIRST_KEY: &str = "sk-ant-stored-first-0123456789";
const SECOND_KEY: &str = "sk-ant-stored-second-9876543210";

/// An upstream that answers every call with a small JSON message and records the key it
/// was sent.
async fn upstream() -> (String, Arc<Mutex<Vec<String>>>) {
    let keys = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&keys);
    let app = Router::new().route(
        "/v1/messages",
        post(move |headers: HeaderMap| {
            let seen = Arc::clone(&seen);
            async move {
                let key = headers
                    .get("x-api-key")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                seen.lock().unwrap().push(key);
                (
                    [("content-type", "application/json")],
                    r#"{"model":"claude-haiku-4-5","usage":{"input_tokens":1,"output_tokens":1}}"#,
                )
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (url, keys)
}

/// Every log line of this (current-thread) test, at every level.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

async fn call(gw: &Gateway, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/messages", gw.url()))
        .header("x-api-key", token)
        .header("content-type", "application/json")
        .body(r#"{"model":"claude-haiku-4-5","max_tokens":8,"messages":[]}"#)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_upstream_key_in_the_credential_store_is_read_when_forwarding_and_never_shown() {
    let logs = Logs::default();
    let writer = logs.clone();
    let _logging = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .finish(),
    );
    let t = TestDb::fresh(Backend::Sqlite).await;
    let secrets = Arc::new(SecretService::new(
        Arc::new(SqlSecretRepository::new(t.db.clone())),
        MasterKey::generate(),
        KeySource::Env,
    ));
    let (gateway, name) = (
        SecretScope::Gateway,
        SecretName::parse("UPSTREAM_KEY").unwrap(),
    );
    secrets
        .set(&gateway, &name, &SecretString::new(FIRST_KEY), "test")
        .await
        .unwrap();
    let (url, keys) = upstream().await;
    let mut config = Config::default();
    let stored = |name: &str, secret: &str| UpstreamConfig {
        name: name.into(),
        base_url: url.clone(),
        api_key_env: None,
        api_key_secret: Some(secret.into()),
        auth: Default::default(),
    };
    // The first upstream's secret does not exist: its calls go to the second.
    config.gateway.upstreams = vec![
        stored("unset", "NOT_SET_YET"),
        stored("stored", "UPSTREAM_KEY"),
    ];
    let store: Arc<dyn Store> = Arc::new(t.store.clone());
    let task = store
        .create(NewTask::new(
            ProjectName::parse("site").unwrap(),
            BuildSpec::new("x"),
        ))
        .await
        .unwrap()
        .task;
    let metrics = Metrics::default();
    let gw = Gateway::start(
        config.gateway_settings_from(|_| None).unwrap(),
        Some(Arc::clone(&store)),
        metrics.clone(),
        Some(Arc::clone(&secrets)),
    )
    .await
    .unwrap();
    let grant = gw.grant(GrantSpec {
        task: Some(task.id),
        attempt: 1,
        ..GrantSpec::default()
    });
    let token = grant.token().expose().to_owned();

    assert_eq!(call(&gw, &token).await.status(), 200);
    assert_eq!(call(&gw, &token).await.status(), 200);
    assert_eq!(*keys.lock().unwrap(), [FIRST_KEY, FIRST_KEY]);
    let reads = |actor: &'static str| {
        let secrets = Arc::clone(&secrets);
        async move {
            let filter = AuditFilter {
                scope: Some(SecretScope::Gateway),
                name: Some(SecretName::parse("UPSTREAM_KEY").unwrap()),
                limit: 100,
            };
            let log = secrets.audit_log(&filter).await.unwrap();
            log.iter()
                .filter(|e| e.action == AuditAction::Read && e.actor == actor)
                .count()
        }
    };
    assert_eq!(reads("gateway").await, 1, "read once, then kept");

    // A new version: the next call carries it, no restart.
    secrets
        .set(&gateway, &name, &SecretString::new(SECOND_KEY), "test")
        .await
        .unwrap();
    assert_eq!(call(&gw, &token).await.status(), 200);
    assert_eq!(keys.lock().unwrap().last().unwrap(), SECOND_KEY);

    // Deleted: no upstream has a key; the answer names the secret, not a value.
    secrets.remove(&gateway, &name, "test").await.unwrap();
    let answer = call(&gw, &token).await;
    assert_eq!(answer.status(), 502);
    let text = answer.text().await.unwrap();
    assert!(
        text.contains("gateway/UPSTREAM_KEY") && text.contains("not found"),
        "{text}"
    );
    assert_eq!(
        keys.lock().unwrap().len(),
        3,
        "nothing sent without its key"
    );

    // The skipped upstream is a failover event (stored in the background) and a metric,
    // naming the secret.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let failovers: Vec<String> = loop {
        let events = store.events_since(task.id, 0, 100).await.unwrap();
        let failovers: Vec<String> = events
            .iter()
            .filter(|e| e.kind == "gateway_failover")
            .map(|e| e.payload.to_string())
            .collect();
        if failovers.len() == 4 || tokio::time::Instant::now() > deadline {
            break failovers;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(failovers.len(), 4, "{failovers:?}");
    assert!(
        failovers[0].contains("\"reason\":\"key\"") && failovers[0].contains("gateway/NOT_SET_YET"),
        "{failovers:?}"
    );
    assert!(metrics
        .encode()
        .contains("rdev_gateway_failovers_total{from=\"unset\",to=\"stored\",reason=\"key\"} 4"));

    let everything = format!("{text}\n{failovers:?}\n{}", logs.text());
    assert!(
        everything.contains("model call failed over"),
        "logs were captured"
    );
    for key in [FIRST_KEY, SECOND_KEY] {
        assert!(!everything.contains(key), "{key} shown:\n{everything}");
    }
}
