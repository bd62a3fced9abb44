//! API tokens against the real application (each test on PostgreSQL and SQLite): a
//! build-scoped token builds, reads and cancels only its projects' tasks and is refused
//! (403 `forbidden`) everywhere else; a read token cannot write; unknown and revoked tokens
//! get 401; an API with no credential closes as soon as a token exists, and stays closed.

use std::sync::Arc;

use rdev_core::{ProjectName, SecretString, TokenName, TokenScope};
use rdev_server::tokens::TokenService;
use rdev_store::{Db, SqlTokenStore};
use rdev_testkit::TestDb;
use reqwest::Method;
use serde_json::{json, Value};

use crate::common;

rdev_testkit::both_backends!(
    a_build_token_reaches_only_its_projects_builds_and_tasks,
    a_read_token_reads_everything_but_cannot_write,
    unknown_and_revoked_tokens_are_unauthorized,
    an_api_without_credentials_closes_once_a_token_exists,
);

const ADMIN: &str = "admin-token-for-auth-tests";

/// The app on `t`'s database, with `ADMIN` as `RDEV_API_TOKEN` when `admin` is set.
async fn start(t: &TestDb, admin: bool) -> common::TestApp {
    let url = t.url.clone();
    common::spawn_app_configured(None, |c| {
        c.database_url = url;
        if admin {
            c.api_token = Some(SecretString::new(ADMIN));
        }
    })
    .await
}

async fn tokens(t: &TestDb) -> TokenService {
    let db = Db::connect(&t.url).await.unwrap();
    TokenService::new(Arc::new(SqlTokenStore::new(db)))
}

/// Creates a token and returns it.
async fn mint(t: &TestDb, name: &str, scope: TokenScope, projects: &[&str]) -> String {
    let projects = projects
        .iter()
        .map(|p| ProjectName::parse(p).unwrap())
        .collect();
    let (_, secret) = tokens(t)
        .await
        .create(TokenName::parse(name).unwrap(), scope, projects)
        .await
        .unwrap();
    secret.expose().to_owned()
}

/// Sends `method path` with `token` (and `body` as JSON); returns status and JSON body.
async fn call(
    app: &common::TestApp,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let client = match token {
        Some(token) => app.client().with_token(token),
        None => app.client(),
    };
    client.call(method, path, body).await
}

/// Asserts 403 with the stable code and the JSON error shape.
fn assert_forbidden((status, body): (u16, Value), what: &str) {
    assert_eq!(status, 403, "{what}: {body}");
    assert_eq!(body["error"]["code"], "forbidden", "{what}: {body}");
    assert!(body["error"]["message"].is_string(), "{what}: {body}");
}

async fn create_projects(app: &common::TestApp, names: &[&str]) {
    for name in names {
        let (status, body) = call(
            app,
            Some(ADMIN),
            Method::POST,
            "/projects",
            Some(json!({"name": name, "repo_url": format!("/srv/git/{name}.git")})),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
}

async fn build(app: &common::TestApp, token: &str, project: &str) -> (u16, Value) {
    let path = format!("/project/{project}/build");
    call(
        app,
        Some(token),
        Method::POST,
        &path,
        Some(json!({"prompt": "x"})),
    )
    .await
}

async fn a_build_token_reaches_only_its_projects_builds_and_tasks(t: TestDb) {
    let app = start(&t, true).await;
    create_projects(&app, &["acme", "blog", "other"]).await;
    let bot = mint(&t, "bot", TokenScope::Build, &["acme", "blog"]).await;
    assert!(bot.starts_with("rdev_"), "{bot}");

    let (status, body) = build(&app, &bot, "acme").await;
    assert_eq!(status, 202, "{body}");
    let own = body["task_id"].as_str().unwrap().to_owned();
    let (status, body) = build(&app, ADMIN, "other").await;
    assert_eq!(status, 202, "{body}");
    let foreign = body["task_id"].as_str().unwrap().to_owned();
    assert_forbidden(build(&app, &bot, "other").await, "build elsewhere");

    // Its own task: read, events, cancel.
    let (status, body) = call(
        &app,
        Some(&bot),
        Method::GET,
        &format!("/tasks/{own}"),
        None,
    )
    .await;
    assert_eq!((status, body["project"].as_str()), (200, Some("acme")));
    let (status, body) = call(
        &app,
        Some(&bot),
        Method::POST,
        &format!("/tasks/{own}/cancel"),
        None,
    )
    .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("cancelled")));
    // Another project's task: neither readable nor cancellable.
    for (method, path) in [
        (Method::GET, format!("/tasks/{foreign}")),
        (Method::GET, format!("/tasks/{foreign}/events")),
        (Method::POST, format!("/tasks/{foreign}/cancel")),
    ] {
        assert_forbidden(
            call(&app, Some(&bot), method.clone(), &path, None).await,
            &format!("{method} {path}"),
        );
    }
    let (_, task) = call(
        &app,
        Some(ADMIN),
        Method::GET,
        &format!("/tasks/{foreign}"),
        None,
    )
    .await;
    assert_eq!(
        task["status"], "queued",
        "the refused cancel changed nothing"
    );
    // A task that does not exist is 404 as for anyone, not a leak of other projects.
    let missing = "01900000-0000-7000-8000-000000000000";
    let (status, _) = call(
        &app,
        Some(&bot),
        Method::GET,
        &format!("/tasks/{missing}"),
        None,
    )
    .await;
    assert_eq!(status, 404);

    // Listing: narrowed to its projects; asking for another project is refused.
    let (status, body) = call(&app, Some(&bot), Method::GET, "/tasks", None).await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<&str> = body["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [own.as_str()]);
    let (status, _) = call(&app, Some(&bot), Method::GET, "/tasks?project=acme", None).await;
    assert_eq!(status, 200);
    assert_forbidden(
        call(&app, Some(&bot), Method::GET, "/tasks?project=other", None).await,
        "list another project",
    );
    let (_, all) = call(&app, Some(ADMIN), Method::GET, "/tasks", None).await;
    assert_eq!(all["tasks"].as_array().unwrap().len(), 2);

    // Everything that is not building or its tasks.
    let secret = Some(json!({"value": "v"}));
    for (method, path, body) in [
        (Method::GET, "/secrets", None),
        (Method::PUT, "/secrets/global/GIT_TOKEN", secret.clone()),
        (Method::PUT, "/secrets/project:acme/GIT_TOKEN", secret),
        (Method::DELETE, "/secrets/project:acme/GIT_TOKEN", None),
        (Method::GET, "/projects", None),
        (Method::GET, "/projects/acme", None),
        (Method::DELETE, "/projects/acme", None),
        (Method::POST, "/projects/acme/webhook-secret", None),
        (
            Method::POST,
            "/projects",
            Some(json!({"name": "new", "repo_url": "/srv/git/new.git"})),
        ),
        (Method::GET, "/metrics", None),
    ] {
        assert_forbidden(
            call(&app, Some(&bot), method.clone(), path, body).await,
            &format!("{method} {path}"),
        );
    }
    // The catalog a bot needs to fill in a build is open to it.
    for path in ["/templates", "/agents", "/openapi.json"] {
        let (status, _) = call(&app, Some(&bot), Method::GET, path, None).await;
        assert_eq!(status, 200, "{path}");
    }
    // Health stays public.
    let (status, _) = call(&app, None, Method::GET, "/healthz", None).await;
    assert_eq!(status, 200);
    app.shutdown.cancel();
}

async fn a_read_token_reads_everything_but_cannot_write(t: TestDb) {
    let app = start(&t, true).await;
    create_projects(&app, &["acme"]).await;
    let (status, body) = build(&app, ADMIN, "acme").await;
    assert_eq!(status, 202, "{body}");
    let task = body["task_id"].as_str().unwrap().to_owned();
    let reader = mint(&t, "dashboard", TokenScope::Read, &[]).await;

    for path in [
        "/projects".to_owned(),
        "/projects/acme".to_owned(),
        "/tasks".to_owned(),
        format!("/tasks/{task}"),
        "/secrets".to_owned(),
        "/metrics".to_owned(),
        "/templates".to_owned(),
    ] {
        let (status, body) = call(&app, Some(&reader), Method::GET, &path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let cancel = format!("/tasks/{task}/cancel");
    for (method, path, body) in [
        (
            Method::POST,
            "/project/acme/build",
            Some(json!({"prompt": "x"})),
        ),
        (Method::POST, cancel.as_str(), None),
        (
            Method::PUT,
            "/secrets/global/GIT_TOKEN",
            Some(json!({"value": "v"})),
        ),
        (
            Method::PATCH,
            "/projects/acme",
            Some(json!({"template": null})),
        ),
        (Method::DELETE, "/projects/acme", None),
        (
            Method::POST,
            "/projects",
            Some(json!({"name": "new", "repo_url": "/srv/git/new.git"})),
        ),
    ] {
        assert_forbidden(
            call(&app, Some(&reader), method.clone(), path, body).await,
            &format!("{method} {path}"),
        );
    }
    // A read token limited to a project sees that project only.
    let narrow = mint(&t, "acme-dashboard", TokenScope::Read, &["acme"]).await;
    let (status, _) = call(&app, Some(&narrow), Method::GET, "/projects/acme", None).await;
    assert_eq!(status, 200);
    assert_forbidden(
        call(&app, Some(&narrow), Method::GET, "/projects", None).await,
        "every project at once",
    );
    app.shutdown.cancel();
}

async fn unknown_and_revoked_tokens_are_unauthorized(t: TestDb) {
    let app = start(&t, true).await;
    create_projects(&app, &["acme"]).await;
    let bot = mint(&t, "bot", TokenScope::Build, &[]).await;
    let (status, _) = call(&app, Some(&bot), Method::GET, "/tasks", None).await;
    assert_eq!(status, 200);
    let service = tokens(&t).await;
    let listed = service.list().await.unwrap();
    assert!(listed[0].last_used_at.is_some(), "{listed:?}");

    service
        .revoke(&TokenName::parse("bot").unwrap())
        .await
        .unwrap();
    for token in [
        Some(bot.as_str()),
        Some("rdev_UnknownUnknownUnknownUnknownUnknown12"),
        Some("not-a-token"),
        None,
    ] {
        let (status, body) = call(&app, token, Method::GET, "/tasks", None).await;
        assert_eq!(status, 401, "{token:?}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let (status, _) = build(&app, &bot, "acme").await;
    assert_eq!(status, 401);
    app.shutdown.cancel();
}

async fn an_api_without_credentials_closes_once_a_token_exists(t: TestDb) {
    let app = start(&t, false).await;
    let (status, _) = call(&app, None, Method::GET, "/projects", None).await;
    assert_eq!(status, 200, "loopback without credentials is open");
    let (status, _) = call(&app, Some("rdev_wrong"), Method::GET, "/projects", None).await;
    assert_eq!(
        status, 401,
        "a presented token is checked even on an open API"
    );
    let ops = mint(&t, "ops", TokenScope::Admin, &[]).await;
    let (status, _) = call(&app, None, Method::GET, "/projects", None).await;
    assert_eq!(status, 401);
    let (status, _) = call(&app, Some(&ops), Method::GET, "/secrets", None).await;
    assert_eq!(status, 200);
    // Revoking the last token does not open the API again.
    tokens(&t)
        .await
        .revoke(&TokenName::parse("ops").unwrap())
        .await
        .unwrap();
    for token in [None, Some(ops.as_str())] {
        let (status, _) = call(&app, token, Method::GET, "/projects", None).await;
        assert_eq!(status, 401, "{token:?}");
    }
    app.shutdown.cancel();
}
