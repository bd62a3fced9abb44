//! The server starts on both backends, answers health and readiness, speaks JSON errors
//! everywhere and shuts down gracefully.

use rdev_testkit::pg::PgDatabase;
use serde_json::Value;

use crate::common::{spawn_app, spawn_app_with};

#[tokio::test]
async fn healthz_and_readyz_answer_on_sqlite() {
    let app = spawn_app().await;
    let c = reqwest::Client::new();
    let r = c
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "ok");
    let r = c
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["database"], "sqlite");
}

#[tokio::test]
async fn readyz_answers_on_postgres() {
    let app = spawn_app_with(Some(PgDatabase::create().await)).await;
    let r = reqwest::get(format!("{}/readyz", app.address))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["database"], "postgres");
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let app = spawn_app().await;
    let c = reqwest::Client::new();
    let r = c
        .get(format!("{}/no/such/route", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/no/such/route"));

    let r = c
        .delete(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
}

#[tokio::test]
async fn shutdown_token_stops_the_server_cleanly() {
    let app = spawn_app().await;
    let addr = app.address.clone();
    assert!(reqwest::get(format!("{addr}/healthz")).await.is_ok());
    app.shutdown.cancel();
    app.handle.await.unwrap().unwrap();
    assert!(
        reqwest::get(format!("{addr}/healthz")).await.is_err(),
        "listener is closed"
    );
}

#[tokio::test]
async fn agents_lists_the_registered_providers_default_first() {
    let app = spawn_app().await;
    let body: Value = reqwest::get(format!("{}/agents", app.address))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let agents = body["agents"].as_array().unwrap();
    assert_eq!(agents[0]["provider"], "claude-code");
    assert_eq!(agents[0]["default"], true);
    assert_eq!(agents[0]["capabilities"]["resume"], true);
}

#[tokio::test]
async fn metrics_report_the_queue_in_prometheus_text() {
    let app = spawn_app().await;
    let c = reqwest::Client::new();
    c.post(format!("{}/projects", app.address))
        .json(&serde_json::json!({"name": "site", "repo_url": "/x.git"}))
        .send()
        .await
        .unwrap();
    let r = c
        .post(format!("{}/project/site/build", app.address))
        .json(&serde_json::json!({"prompt": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = c
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("rdev_tasks{status=\"queued\"} 1"), "{text}");
    assert!(text.contains("rdev_tasks{status=\"running\"} 0"), "{text}");
    assert!(text.trim_end().ends_with("# EOF"));
}

#[tokio::test]
async fn malformed_path_segments_and_query_strings_get_json_errors() {
    let app = spawn_app().await;
    let c = reqwest::Client::new();
    for (url, code) in [
        // %FF is not UTF-8: the path segment cannot become a String.
        (format!("{}/projects/%FF", app.address), "invalid_path"),
        (format!("{}/templates/%FF", app.address), "invalid_path"),
        (format!("{}/tasks?limit=many", app.address), "invalid_query"),
        (
            format!("{}/secrets?scope=a&scope=b", app.address),
            "invalid_query",
        ),
    ] {
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 400, "{url}");
        let body: Value = r.json().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(body["error"]["code"], code, "{url}: {body}");
    }
}
