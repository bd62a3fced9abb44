//! `POST /project/{name}/build`: the happy path answers 202 at once, Idempotency-Key
//! returns the same task for the same request and refuses a different one, and every bad
//! input gets its status code with nothing queued.

use rdev_core::SecretString;
use rdev_testkit::pg::PgDatabase;
use serde_json::{json, Value};

use crate::common::{get_json, spawn_app_configured, TestApp};

const TOKEN: &str = "test-token-123";

async fn app(pg: bool) -> TestApp {
    let url = if pg {
        Some(PgDatabase::create().await)
    } else {
        None
    };
    let app = spawn_app_configured(url, |c| {
        c.api_token = Some(SecretString::new(TOKEN));
        c.max_prompt_bytes = 4096;
    })
    .await;
    let r = client()
        .post(format!("{}/projects", app.address))
        .json(&json!({"name": "site", "repo_url": "/srv/git/site.git", "template": "static-site"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    app
}

fn client() -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    reqwest::Client::builder()
        .default_headers(h)
        .build()
        .unwrap()
}

async fn post_build(app: &TestApp, project: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(format!("{}/project/{project}/build", app.address))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn queued(app: &TestApp) -> usize {
    let v = get_json(&client(), format!("{}/tasks", app.address)).await;
    v["tasks"].as_array().unwrap().len()
}

async fn accepted_and_idempotent(app: TestApp) {
    let (status, body) = post_build(&app, "site", json!({"prompt": "Add a contact page"})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "queued");
    let id = body["task_id"].as_str().unwrap().to_owned();

    let send = |key: &'static str| {
        client()
            .post(format!("{}/project/site/build", app.address))
            .header("idempotency-key", key)
            .json(&json!({"prompt": "Add a blog"}))
            .send()
    };
    let first: Value = send("key-1").await.unwrap().json().await.unwrap();
    let again = send("key-1").await.unwrap();
    assert_eq!(again.status(), 200, "a repeat is not a new task");
    let again: Value = again.json().await.unwrap();
    assert_eq!(first["task_id"], again["task_id"]);
    assert_ne!(first["task_id"].as_str().unwrap(), id);
    assert_eq!(queued(&app).await, 2);

    // The same request written differently (layout, key order, explicit defaults) is the
    // same request; a different one under a used key is refused, naming the key's task.
    let raw = |body: &'static str| {
        client()
            .post(format!("{}/project/site/build", app.address))
            .header("idempotency-key", "key-1")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let same = raw(r#"{ "auto_deploy": false, "model": null,
                        "prompt": "Add a blog" }"#)
    .await
    .unwrap();
    assert_eq!(same.status(), 200);
    let same: Value = same.json().await.unwrap();
    assert_eq!(same["task_id"], first["task_id"]);
    for body in [
        r#"{"prompt": "Add a shop"}"#,
        r#"{"prompt": "Add a blog", "auto_deploy": true}"#,
    ] {
        let other = raw(body).await.unwrap();
        assert_eq!(other.status(), 422, "{body}");
        let err: Value = other.json().await.unwrap();
        assert_eq!(err["error"]["code"], "idempotency_key_reused", "{err}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(first["task_id"].as_str().unwrap()),
            "{message}"
        );
    }
    assert_eq!(queued(&app).await, 2, "nothing was queued for them");

    let task = get_json(&client(), format!("{}/tasks/{id}", app.address)).await;
    assert_eq!(task["status"], "queued");
    assert_eq!(task["spec"]["prompt"], "Add a contact page");
}

#[tokio::test]
async fn build_is_accepted_and_idempotent_on_sqlite() {
    accepted_and_idempotent(app(false).await).await;
}

#[tokio::test]
async fn build_is_accepted_and_idempotent_on_postgres() {
    accepted_and_idempotent(app(true).await).await;
}

#[tokio::test]
async fn every_bad_input_has_its_status_and_queues_nothing() {
    let app = app(false).await;
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("nope", json!({"prompt": "x"}), 404, "not_found"),
        (
            "Bad_Name",
            json!({"prompt": "x"}),
            422,
            "invalid_project_name",
        ),
        ("site", json!({"prompt": "   "}), 422, "prompt_required"),
        (
            "site",
            json!({"prompt": "x", "timeout_secs": 0}),
            422,
            "invalid_timeout",
        ),
        (
            "site",
            json!({"prompt": "x", "timeout_secs": 999_999_999}),
            422,
            "invalid_timeout",
        ),
        (
            "site",
            json!({"prompt": "x", "template": "no-such"}),
            422,
            "unknown_template",
        ),
        (
            "site",
            json!({"prompt": "x", "template": "static-site", "variables": {}}),
            422,
            "missing_variable",
        ),
        (
            "site",
            json!({"prompt": "x", "template": "static-site", "variables": {"title": "t", "zzz": "1"}}),
            422,
            "unknown_variable",
        ),
        (
            "site",
            json!({"prompt": "x", "callback_url": "http://127.0.0.1:9/cb"}),
            422,
            "private_callback_url",
        ),
        (
            "site",
            json!({"prompt": "x", "callback_url": "http://169.254.169.254/"}),
            422,
            "private_callback_url",
        ),
        (
            "site",
            json!({"prompt": "x", "callback_url": "ftp://example.com/"}),
            422,
            "invalid_callback_url_scheme",
        ),
        (
            "site",
            json!({"prompt": "x", "provider": "no-such-agent"}),
            422,
            "unknown_provider",
        ),
        (
            "site",
            json!({"prompt": "x", "provider": "Bad Id"}),
            422,
            "invalid_body",
        ),
        ("site", json!({"promt": "typo"}), 422, "invalid_body"),
        // Both reach the agent's command line: nothing option-like gets in.
        (
            "site",
            json!({"prompt": "x", "session_id": "--add-dir=/"}),
            422,
            "invalid_session_id",
        ),
        (
            "site",
            json!({"prompt": "x", "model": "--add-dir=/"}),
            422,
            "invalid_model",
        ),
        (
            "site",
            json!({"prompt": "x", "session_id": "--permission-mode=default"}),
            422,
            "invalid_session_id",
        ),
        (
            "site",
            json!({"prompt": "x", "model": "-p"}),
            422,
            "invalid_model",
        ),
        (
            "site",
            json!({"prompt": "x", "session_id": "ses_1/../../config"}),
            422,
            "invalid_session_id",
        ),
        (
            "site",
            json!({"prompt": "x", "model": "claude x"}),
            422,
            "invalid_model",
        ),
        (
            "site",
            json!({"prompt": "x".repeat(5000)}),
            422,
            "prompt_too_large",
        ),
        (
            "site",
            json!({"prompt": "x".repeat(200_000)}),
            413,
            "payload_too_large",
        ),
    ];
    for (project, body, status, code) in cases {
        let (got, err) = post_build(&app, project, body.clone()).await;
        assert_eq!(
            got,
            status,
            "{project} {}: {err}",
            &body.to_string()[..body.to_string().len().min(120)]
        );
        assert_eq!(err["error"]["code"], code, "{err}");
    }
    // Unauthenticated.
    let r = reqwest::Client::new()
        .post(format!("{}/project/site/build", app.address))
        .json(&json!({"prompt": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "unauthorized"
    );
    let r = reqwest::Client::new()
        .post(format!("{}/project/site/build", app.address))
        .bearer_auth("wrong")
        .json(&json!({"prompt": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Health stays open.
    let r = reqwest::get(format!("{}/healthz", app.address))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    assert_eq!(queued(&app).await, 0, "no bad request queued anything");
}

#[tokio::test]
async fn private_callbacks_are_accepted_when_configured() {
    let app = spawn_app_configured(None, |c| c.allow_private_callbacks = true).await;
    let c = reqwest::Client::new();
    c.post(format!("{}/projects", app.address))
        .json(&json!({"name": "site", "repo_url": "/x.git"}))
        .send()
        .await
        .unwrap();
    let r = c
        .post(format!("{}/project/site/build", app.address))
        .json(&json!({"prompt": "x", "callback_url": "http://127.0.0.1:9/cb"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
}

#[tokio::test]
async fn real_model_names_and_session_ids_are_accepted() {
    let app = app(false).await;
    // A session resumes only where a completed build of the project reported it.
    for session in ["ses_5ZbQ1xYz9AbC", "0197a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"] {
        crate::common::remember_session(&app, "site", "claude-code", session).await;
    }
    for (model, session) in [
        ("anthropic/claude-sonnet-4-5", "ses_5ZbQ1xYz9AbC"),
        (
            "claude-sonnet-4-5@20250929",
            "0197a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
        ),
    ] {
        let (status, body) = post_build(
            &app,
            "site",
            json!({"prompt": "x", "model": model, "session_id": session}),
        )
        .await;
        assert_eq!(status, 202, "{model} {session}: {body}");
        let id = body["task_id"].as_str().unwrap();
        let task = get_json(&client(), format!("{}/tasks/{id}", app.address)).await;
        assert_eq!(task["spec"]["model"], model);
        assert_eq!(task["spec"]["session_id"], session);
    }
}

/// `POST /tasks/{id}/retry`: a cancelled task gets one retry with its spec (202, then 200
/// with the same retry), linked by `retry_of`; a queued task is 409 `not_retryable`; the
/// CLI-facing answer names both ids.
#[tokio::test]
async fn a_cancelled_task_is_retried_once_and_a_queued_one_is_not() {
    let app = app(false).await;
    let (_, first) = post_build(&app, "site", json!({"prompt": "Add a FAQ"})).await;
    let id = first["task_id"].as_str().unwrap().to_owned();
    let post = |path: String| {
        let url = format!("{}{path}", app.address);
        async move {
            let r = client().post(url).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = post(format!("/tasks/{id}/retry")).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "not_retryable");
    assert_eq!(post(format!("/tasks/{id}/cancel")).await.0, 200);
    let (status, body) = post(format!("/tasks/{id}/retry")).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["retry_of"], id.as_str());
    let retry = body["task_id"].as_str().unwrap().to_owned();
    assert_ne!(retry, id);
    let (status, again) = post(format!("/tasks/{id}/retry")).await;
    assert_eq!(
        (status, again["task_id"].as_str()),
        (200, Some(retry.as_str()))
    );
    let t = get_json(&client(), format!("{}/tasks/{retry}", app.address)).await;
    assert_eq!(t["status"], "queued");
    assert_eq!(t["retry_of"], id.as_str());
    assert_eq!(t["spec"]["prompt"], "Add a FAQ");
}
