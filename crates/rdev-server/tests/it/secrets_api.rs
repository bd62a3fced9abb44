//! The secrets HTTP API on the real application (each test on PostgreSQL and SQLite):
//! values are write-only, errors never echo them, the callback signing secret is out of
//! their reach, and the server refuses to start with an exposed key file or a key that
//! does not match the database.

use std::{fs, os::unix::fs::PermissionsExt};

use rdev_server::{secrets::MasterKey, Application, Config};
use rdev_testkit::TestDb;
use serde_json::{json, Value};

rdev_testkit::both_backends!(
    values_are_write_only_and_versions_grow,
    bad_scopes_names_and_bodies_are_rejected_without_echoing_the_value,
    the_signing_secret_is_not_listed_set_or_deleted_through_secrets,
    server_refuses_an_exposed_key_file_and_a_wrong_key,
);

const VALUE: &str = "api-s3cret-value-123";

fn config(t: &TestDb) -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: t.url.clone(),
        data_dir: t.dir.path().join("data"),
        ..Config::default()
    };
    // The default list also starts a supervised `opencode serve`, which would run with the
    // real HOME and could reach the network; these tests need no agent at all.
    config.agents.enabled = vec!["claude-code".into()];
    config
}

struct Running {
    base: String,
    stop: tokio_util::sync::CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start(t: &TestDb) -> Running {
    let app = Application::build(config(t)).await.expect("app builds");
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = app.shutdown_token();
    let handle = tokio::spawn(app.run_until_stopped());
    Running { base, stop, handle }
}

impl Running {
    async fn finish(self) {
        self.stop.cancel();
        self.handle.await.unwrap().unwrap();
    }
}

async fn send(req: reqwest::RequestBuilder) -> (u16, String) {
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

async fn values_are_write_only_and_versions_grow(t: TestDb) {
    let app = start(&t).await;
    let http = reqwest::Client::new();
    let url = format!("{}/secrets/global/GITHUB_TOKEN", app.base);
    let (status, body) = send(http.put(&url).json(&json!({"value": VALUE}))).await;
    assert_eq!(status, 201, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            v["scope"].as_str(),
            v["name"].as_str(),
            v["version"].as_u64()
        ),
        (Some("global"), Some("GITHUB_TOKEN"), Some(1))
    );
    let (status, body) = send(http.put(&url).json(&json!({"value": "second-value-xyz"}))).await;
    assert_eq!(status, 200, "{body}");
    // Percent-encoded scope in the path works too.
    let site = format!("{}/secrets/project%3Asite/API_KEY", app.base);
    let (status, body) = send(http.put(&site).json(&json!({"value": "site-value-abc"}))).await;
    assert_eq!(status, 201, "{body}");

    let (status, listing) = send(http.get(format!("{}/secrets", app.base))).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&listing).unwrap();
    assert_eq!(v["secrets"].as_array().unwrap().len(), 2);
    assert_eq!(v["secrets"][0]["version"], 2);
    for secret in [VALUE, "second-value-xyz", "site-value-abc"] {
        assert!(!listing.contains(secret), "{listing}");
    }
    let (_, scoped) = send(http.get(format!("{}/secrets?scope=project:site", app.base))).await;
    let v: Value = serde_json::from_str(&scoped).unwrap();
    assert_eq!(v["secrets"][0]["name"], "API_KEY");
    assert_eq!(v["secrets"].as_array().unwrap().len(), 1);

    // There is no way to read a value back.
    let (status, body) = send(http.get(&url)).await;
    assert_eq!(status, 405, "{body}");
    assert!(!body.contains("second-value-xyz"));

    let (status, body) = send(http.delete(&url)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["deleted_versions"],
        2
    );
    let (status, body) = send(http.delete(&url)).await;
    assert_eq!(status, 404);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["code"],
        "secret_not_found"
    );
    app.finish().await;
}

async fn bad_scopes_names_and_bodies_are_rejected_without_echoing_the_value(t: TestDb) {
    let app = start(&t).await;
    let http = reqwest::Client::new();
    let cases = [
        ("team:x/A", json!({"value": VALUE}), 400, "invalid_field"),
        (
            "project:Bad_Name/A",
            json!({"value": VALUE}),
            400,
            "invalid_project_name",
        ),
        (
            "global/9LIVES",
            json!({"value": VALUE}),
            400,
            "invalid_field",
        ),
        ("global/A", json!({"value": 987654321}), 422, "invalid_body"),
        ("global/A", json!({"valu": VALUE}), 422, "invalid_body"),
        (
            "global/A",
            json!({"value": ""}),
            422,
            "invalid_secret_value",
        ),
    ];
    for (path, body, want_status, want_code) in cases {
        let (status, text) =
            send(http.put(format!("{}/secrets/{path}", app.base)).json(&body)).await;
        assert_eq!(status, want_status, "{path}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"]["code"], want_code, "{path}: {text}");
        assert!(
            !text.contains(VALUE) && !text.contains("987654321"),
            "echoed: {text}"
        );
    }
    let (status, text) = send(
        http.put(format!("{}/secrets/global/A", app.base))
            .header("content-type", "application/json")
            .body(format!("{{\"value\": \"{VALUE}\"")),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(!text.contains(VALUE), "echoed: {text}");
    let (status, _) = send(http.get(format!("{}/secrets?scope=nope", app.base))).await;
    assert_eq!(status, 400);
    app.finish().await;
}

async fn the_signing_secret_is_not_listed_set_or_deleted_through_secrets(t: TestDb) {
    let app = start(&t).await;
    let http = reqwest::Client::new();
    let (status, body) = send(
        http.post(format!("{}/projects", app.base))
            .json(&json!({"name": "site", "repo_url": "/x.git"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let first = serde_json::from_str::<Value>(&body).unwrap()["webhook_secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = send(
        http.put(format!("{}/secrets/project:site/DEPLOY_TOKEN", app.base))
            .json(&json!({"value": VALUE})),
    )
    .await;
    assert_eq!(status, 201);

    for query in ["", "?scope=project:site"] {
        let (status, listing) = send(http.get(format!("{}/secrets{query}", app.base))).await;
        assert_eq!(status, 200);
        let names: Vec<Value> = serde_json::from_str::<Value>(&listing).unwrap()["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].clone())
            .collect();
        assert_eq!(names, [json!("DEPLOY_TOKEN")], "{query}: {listing}");
    }
    for scope in ["project:site", "global"] {
        let url = format!("{}/secrets/{scope}/RDEV_WEBHOOK_SECRET", app.base);
        let (status, text) = send(http.put(&url).json(&json!({"value": "whsec_mine"}))).await;
        assert_eq!(status, 403, "{scope}: {text}");
        let err: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(err["error"]["code"], "reserved_secret_name", "{text}");
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("/webhook-secret"),
            "{text}"
        );
        let (status, text) = send(http.delete(&url)).await;
        assert_eq!(status, 403, "{scope}: {text}");
        let err: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(err["error"]["code"], "reserved_secret_name", "{text}");
    }

    // Rotation is the one way in, and it still works; the new secret is still unlisted.
    let (status, body) =
        send(http.post(format!("{}/projects/site/webhook-secret", app.base))).await;
    assert_eq!(status, 200, "{body}");
    let second = serde_json::from_str::<Value>(&body).unwrap()["webhook_secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(second.starts_with("whsec_") && second != first);
    let (_, listing) = send(http.get(format!("{}/secrets", app.base))).await;
    assert!(!listing.contains("RDEV_WEBHOOK_SECRET"), "{listing}");
    app.finish().await;
}

async fn server_refuses_an_exposed_key_file_and_a_wrong_key(t: TestDb) {
    // First start creates the key file (0600) and the key check.
    let app = start(&t).await;
    app.finish().await;
    let key_file = t.dir.path().join("data/master.key");
    assert_eq!(
        fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    fs::set_permissions(&key_file, fs::Permissions::from_mode(0o644)).unwrap();
    let err = format!("{:#}", Application::build(config(&t)).await.unwrap_err());
    assert!(err.contains("chmod 600") && err.contains("0644"), "{err}");

    fs::remove_file(&key_file).unwrap();
    MasterKey::generate().write_new_file(&key_file).unwrap();
    let err = format!("{:#}", Application::build(config(&t)).await.unwrap_err());
    assert!(
        err.contains("not the key this database's secrets were encrypted with"),
        "{err}"
    );
}
