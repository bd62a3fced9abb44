//! The web UI under `/ui`: plain HTTP checks of its rules (login, session cookie, Origin
//! check, scope) here, and the flows a person follows in headless Chromium in [`flows`].
//! Run them with `cargo test -p rdev-server --test it -- ui::`.

mod browser;
mod flows;

use rdev_core::{SecretString, TokenName, TokenScope};
use rdev_testkit::{claude_bin, claude_env, ScriptedModel, TEST_API_KEY};
use reqwest::{header, redirect::Policy, Client, Method, StatusCode};
use serde_json::json;

use crate::common::{spawn_app_configured, TestApp};

const ADMIN: &str = "ui-admin-token";

/// An app with one worker whose Claude Code talks to the scripted model, and optionally an
/// admin token (then the UI asks for a login).
pub struct UiWorld {
    pub app: TestApp,
    _model: ScriptedModel,
    _dir: tempfile::TempDir,
}

pub async fn world(token: Option<&str>) -> UiWorld {
    let dir = tempfile::tempdir().unwrap();
    let model = ScriptedModel::start().await.unwrap();
    let base = model.base_url();
    let state = dir.path().join("claude-state");
    let token = token.map(SecretString::new);
    let app = spawn_app_configured(None, move |c| {
        c.worker_concurrency = 1;
        c.allow_private_callbacks = true;
        c.api_token = token;
        let cc = &mut c.agents.claude_code;
        cc.bin = Some(claude_bin());
        cc.config_root = Some(state);
        cc.env = claude_env(&base, TEST_API_KEY);
    })
    .await;
    UiWorld {
        app,
        _model: model,
        _dir: dir,
    }
}

/// A client that keeps no cookies and follows no redirects (the tests look at both).
fn client() -> Client {
    Client::builder().redirect(Policy::none()).build().unwrap()
}

/// Logs in with `token` the way the login form does; returns the session cookie.
async fn login(app: &TestApp, token: &str) -> String {
    let r = client()
        .post(format!("{}/ui/login", app.address))
        .header(header::ORIGIN, &app.address)
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookie = r.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    cookie.split(';').next().unwrap().to_owned()
}

async fn page(app: &TestApp, cookie: &str, path: &str) -> (StatusCode, String) {
    let r = client()
        .get(format!("{}{path}", app.address))
        .header(header::COOKIE, cookie)
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap())
}

#[tokio::test]
async fn ui_needs_a_login_when_a_token_is_configured_and_forms_need_our_origin() {
    let w = world(Some(ADMIN)).await;
    let app = &w.app;
    // No session: to the login page; a wrong token is refused next to the field.
    let (status, _) = page(app, "", "/ui/builds").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let r = client()
        .post(format!("{}/ui/login", app.address))
        .header(header::ORIGIN, &app.address)
        .form(&[("token", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.text().await.unwrap().contains("token-error"));

    let cookie = login(app, ADMIN).await;
    let (status, html) = page(app, &cookie, "/ui/builds").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("<h1>Builds</h1>"), "{html}");

    // A form sent from elsewhere, or without Origin, is refused even with the cookie.
    for origin in [Some("http://evil.example"), None] {
        let mut req = client()
            .post(format!("{}/ui/projects/new", app.address))
            .header(header::COOKIE, &cookie)
            .form(&[("name", "x")]);
        if let Some(o) = origin {
            req = req.header(header::ORIGIN, o);
        }
        assert_eq!(req.send().await.unwrap().status(), StatusCode::FORBIDDEN);
    }

    // Logging out ends the session on the server.
    let r = client()
        .post(format!("{}/ui/logout", app.address))
        .header(header::ORIGIN, &app.address)
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        page(app, &cookie, "/ui/builds").await.0,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn a_read_token_sees_its_project_only_and_gets_no_buttons() {
    let w = world(Some(ADMIN)).await;
    let app = &w.app;
    let api = app.client().with_token(ADMIN);
    for name in ["alpha", "beta"] {
        let (status, body) = api
            .call(Method::POST, "/projects", Some(json!({"name": name})))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let build = |project: &'static str, prompt: &'static str| {
        let api = api.clone();
        async move {
            let path = format!("/project/{project}/build");
            let (status, body) = api
                .call(Method::POST, &path, Some(json!({"prompt": prompt})))
                .await;
            assert_eq!(status, 202, "{body}");
            body["task_id"].as_str().unwrap().to_owned()
        }
    };
    let alpha = build("alpha", "@@sleep 60000\n@@reply late").await;
    let beta = build("beta", "@@reply b").await;
    let tokens = rdev_server::tokens::TokenService::new(std::sync::Arc::new(
        rdev_store::SqlTokenStore::new(app_db(app).await),
    ));
    let (_, secret) = tokens
        .create(
            TokenName::parse("viewer").unwrap(),
            TokenScope::Read,
            vec![rdev_core::ProjectName::parse("alpha").unwrap()],
        )
        .await
        .unwrap();
    let cookie = login(app, secret.expose()).await;

    let (_, list) = page(app, &cookie, "/ui/builds").await;
    assert!(list.contains(&alpha), "{list}");
    assert!(
        !list.contains(&beta),
        "another project's build shows: {list}"
    );
    let (status, _) = page(app, &cookie, &format!("/ui/builds/{beta}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, html) = page(app, &cookie, &format!("/ui/builds/{alpha}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !html.contains("cancel-build"),
        "a read token cannot cancel: {html}"
    );
    let (_, projects) = page(app, &cookie, "/ui/projects").await;
    assert!(
        projects.contains("alpha") && !projects.contains("beta"),
        "{projects}"
    );
    assert!(!projects.contains("New project"), "{projects}");
    // Acting anyway is refused by the API the form goes through.
    let r = client()
        .post(format!("{}/ui/builds/{alpha}/cancel", app.address))
        .header(header::ORIGIN, &app.address)
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), StatusCode::SEE_OTHER);
    assert!(r.text().await.unwrap().contains("does not allow"));
    let (_, t) = api
        .call(Method::GET, &format!("/tasks/{alpha}"), None)
        .await;
    assert_ne!(t["status"], "cancelled", "{t}");
    // Stop the sleeping agent so the test ends promptly.
    api.call(Method::POST, &format!("/tasks/{alpha}/cancel"), None)
        .await;
}

/// A second connection to the app's SQLite database (tokens are made the CLI's way).
async fn app_db(app: &TestApp) -> rdev_store::Db {
    let path = app._dir.path().join("rdev.db");
    rdev_store::Db::connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap()
}
