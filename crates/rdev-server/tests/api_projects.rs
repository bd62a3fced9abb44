//! Project CRUD over HTTP on both backends, every bad-name and bad-field case, and the
//! fence around the environment a project's secret plan may set (at the API and, for a
//! plan that got into the store some other way, when a build's secrets are injected).

mod common;

use std::time::Duration;

use common::{
    get_json, spawn_app, spawn_app_configured, spawn_app_with, start_build, wait_for_task, TestApp,
};
use rdev_core::{InjectionPlan, ProjectName, ProjectStore, SecretName};
use rdev_store::{Db, SqlStore, StoreConfig};
use rdev_testkit::pg::PgDatabase;
use serde_json::{json, Value};

async fn crud_round_trip(app: TestApp) {
    let c = reqwest::Client::new();
    let base = &app.address;
    let r = c
        .post(format!("{base}/projects"))
        .json(&json!({"name": "my-site", "repo_url": "/srv/git/my-site.git", "template": "static-site",
                      "deploy_url_pattern": "https://{project}.example.com", "provider": "claude-code"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["default_branch"], "main");
    assert_eq!(p["provider"], "claude-code");

    let again = c
        .post(format!("{base}/projects"))
        .json(&json!({"name": "my-site", "repo_url": "/x.git"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    assert_eq!(
        again.json::<Value>().await.unwrap()["error"]["code"],
        "conflict"
    );

    let list = get_json(&c, format!("{base}/projects")).await;
    assert_eq!(list["projects"].as_array().unwrap().len(), 1);

    let r = c
        .patch(format!("{base}/projects/my-site"))
        .json(&json!({"default_branch": "release", "woodpecker_repo_id": 7, "template": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let shown = get_json(&c, format!("{base}/projects/my-site")).await;
    assert_eq!(shown["default_branch"], "release");
    assert_eq!(shown["woodpecker_repo_id"], 7);
    assert_eq!(shown["template"], Value::Null);

    let r = c
        .delete(format!("{base}/projects/my-site"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = c
        .get(format!("{base}/projects/my-site"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "not_found"
    );
    let r = c
        .delete(format!("{base}/projects/my-site"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn project_crud_on_sqlite() {
    crud_round_trip(spawn_app().await).await;
}

#[tokio::test]
async fn project_crud_on_postgres() {
    crud_round_trip(spawn_app_with(Some(PgDatabase::create().await)).await).await;
}

#[tokio::test]
async fn bad_names_are_422_with_a_clear_message() {
    let app = spawn_app().await;
    let c = reqwest::Client::new();
    let long = "a".repeat(64);
    for name in [
        "",
        "../etc",
        "My-Site",
        "a b",
        "a/b",
        "-lead",
        "trail-",
        long.as_str(),
        "..",
        "ü",
    ] {
        let r = c
            .post(format!("{}/projects", app.address))
            .json(&json!({"name": name, "repo_url": "/x.git"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{name:?}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_project_name", "{name:?}");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }
    // Path names are checked the same way.
    let r = c
        .get(format!("{}/projects/UPPER", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let r = c
        .get(format!("{}/projects/..%2Fetc", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    // Nothing was created.
    let list = get_json(&c, format!("{}/projects", app.address)).await;
    assert_eq!(list["projects"], json!([]));
}

#[tokio::test]
async fn bad_fields_are_422_naming_the_field() {
    let app = spawn_app().await;
    let c = reqwest::Client::new();
    let cases = [
        (json!({"name": "p", "repo_url": ""}), "repo_url"),
        (
            json!({"name": "p", "repo_url": "--upload-pack=evil"}),
            "repo_url",
        ),
        (
            json!({"name": "p", "repo_url": "https://u:tok@git.example/p.git"}),
            "repo_url",
        ),
        (
            json!({"name": "p", "repo_url": "https://ghp_tok@git.example/p.git"}),
            "repo_url",
        ),
        (
            json!({"name": "p", "repo_url": "ssh://git:tok@git.example/p.git"}),
            "repo_url",
        ),
        (
            json!({"name": "p", "repo_url": "/x.git", "default_branch": "../x"}),
            "default_branch",
        ),
        (
            json!({"name": "p", "repo_url": "/x.git", "deploy_url_pattern": "https://{nope}.x"}),
            "deploy_url_pattern",
        ),
        (
            json!({"name": "p", "repo_url": "/x.git", "woodpecker_repo_id": 0}),
            "woodpecker_repo_id",
        ),
        (
            json!({"name": "p", "repo_url": "/x.git", "provider": "Bad Provider"}),
            "provider",
        ),
        (
            json!({"name": "p", "repo_url": "/x.git", "template": "no-such-template"}),
            "no-such-template",
        ),
        (
            json!({"name": "p", "repo_url": "/x.git", "colour": "red"}),
            "colour",
        ),
    ];
    for (body, needle) in cases {
        let r = c
            .post(format!("{}/projects", app.address))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{body}");
        let err: Value = r.json().await.unwrap();
        let msg = err["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{body}: {msg}");
        assert!(!msg.contains("tok@"), "credentials never echoed: {msg}");
    }
    let r = c
        .post(format!("{}/projects", app.address))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_json"
    );
}

#[tokio::test]
async fn project_from_template_gets_a_new_repository_with_a_rendered_first_commit() {
    let app = spawn_app().await;
    let c = reqwest::Client::new();
    let r = c
        .post(format!("{}/projects", app.address))
        .json(&json!({"name": "hello", "template": "static-site", "variables": {"title": "Hello Rdev"}}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    let sha = body["initial_commit"]
        .as_str()
        .expect("a first commit")
        .to_owned();
    let repo = body["repo_url"].as_str().unwrap().to_owned();
    let head = std::process::Command::new("git")
        .args(["--git-dir", &repo, "rev-parse", "refs/heads/main"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&head.stdout).trim(), sha);
    let grep = std::process::Command::new("git")
        .args(["--git-dir", &repo, "grep", "-l", "Hello Rdev", "main"])
        .output()
        .unwrap();
    assert!(
        !grep.stdout.is_empty(),
        "the title was rendered into the commit"
    );
}

#[tokio::test]
async fn template_variable_errors_are_422_and_create_nothing() {
    let app = spawn_app().await;
    let c = reqwest::Client::new();
    let cases = [
        (
            json!({"name": "t1", "template": "static-site", "variables": {}}),
            "missing_variable",
            "title",
        ),
        (
            json!({"name": "t2", "template": "static-site", "variables": {"title": "x", "nope": "y"}}),
            "unknown_variable",
            "nope",
        ),
        (
            json!({"name": "t3", "repo_url": "/x.git", "variables": {"title": "x"}}),
            "invalid_field",
            "variables",
        ),
    ];
    for (body, code, needle) in cases {
        let r = c
            .post(format!("{}/projects", app.address))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_unprocessable(r, code, needle).await;
    }
    let list = get_json(&c, format!("{}/projects", app.address)).await;
    assert_eq!(list["projects"], json!([]));
}

#[tokio::test]
async fn templates_are_listed_with_their_variables() {
    let app = spawn_app().await;
    let c = reqwest::Client::new();
    let list = get_json(&c, format!("{}/templates", app.address)).await;
    let names: Vec<&str> = list["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"astro-landing") && names.contains(&"static-site"),
        "{names:?}"
    );
    let one = get_json(&c, format!("{}/templates/astro-landing", app.address)).await;
    assert_eq!(one["variables"]["title"]["required"], true);
    let r = c
        .get(format!("{}/templates/nope", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "unknown_template"
    );
}

/// Asserts a 422 with `code` whose message contains `needle`.
async fn assert_unprocessable(r: reqwest::Response, code: &str, needle: &str) {
    assert_eq!(r.status(), 422);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["code"], code, "{err}");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains(needle), "{needle}: {err}");
}

/// Plans a project may not have: each with the code and the rule its 422 names.
fn fenced_plans() -> Vec<(Value, &'static str, &'static str)> {
    let env = |var: &str| json!({"env": [["DEPLOY_TOKEN", "DEPLOY_TOKEN"], [var, "X"]]});
    let mut plans: Vec<_> = [
        ("ANTHROPIC_BASE_URL", "ANTHROPIC_*"),
        ("https_proxy", "*_PROXY"),
        ("CLAUDE_CONFIG_DIR", "CLAUDE_*"),
        ("OPENCODE_SERVER_PASSWORD", "OPENCODE_*"),
        ("RDEV_API_TOKEN", "RDEV_*"),
        ("NODE_OPTIONS", "NODE_*"),
        ("LD_PRELOAD", "LD_*"),
        ("GIT_CONFIG_COUNT", "GIT_*"),
        ("PATH", "PATH"),
        ("HOME", "HOME"),
        ("IS_SANDBOX", "IS_SANDBOX"),
    ]
    .into_iter()
    .map(|(var, rule)| (env(var), "reserved_env_name", rule))
    .collect();
    let webhook = "RDEV_WEBHOOK_SECRET";
    plans.push((
        json!({"env": [["HOOK", webhook]]}),
        "reserved_secret_name",
        webhook,
    ));
    plans.push((
        json!({"git_token": webhook}),
        "reserved_secret_name",
        webhook,
    ));
    plans
}

#[tokio::test]
async fn secret_plans_may_not_set_fenced_variables_nor_name_the_signing_secret() {
    let app = spawn_app().await;
    let c = reqwest::Client::new();
    let base = &app.address;
    for (plan, code, rule) in fenced_plans() {
        let r = c
            .post(format!("{base}/projects"))
            .json(&json!({"name": "p", "repo_url": "/x.git", "secrets": plan}))
            .send()
            .await
            .unwrap();
        assert_unprocessable(r, code, rule).await;
    }
    let list = get_json(&c, format!("{base}/projects")).await;
    assert_eq!(list["projects"], json!([]), "nothing was created");

    let good = json!({"env": [["DEPLOY_TOKEN", "DEPLOY_TOKEN"]], "git_token": "GIT_TOKEN"});
    let r = c
        .post(format!("{base}/projects"))
        .json(&json!({"name": "p", "repo_url": "/x.git", "secrets": good}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    for (plan, code, rule) in fenced_plans() {
        let r = c
            .patch(format!("{base}/projects/p"))
            .json(&json!({"secrets": plan}))
            .send()
            .await
            .unwrap();
        assert_unprocessable(r, code, rule).await;
    }
    let shown = get_json(&c, format!("{base}/projects/p")).await;
    assert_eq!(shown["secrets"], good, "the plan is unchanged");
}

#[tokio::test]
async fn a_fenced_plan_stored_around_the_api_fails_the_build_at_injection() {
    let app = spawn_app_configured(None, |c| c.worker_concurrency = 1).await;
    let c = reqwest::Client::new();
    let base = &app.address;
    let r = c
        .post(format!("{base}/projects"))
        .json(&json!({"name": "site", "repo_url": "/x.git"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = c
        .put(format!("{base}/secrets/global/UPSTREAM"))
        .json(&json!({"value": "http://attacker.example"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // As an older rdev, or an edit in the database, could have stored it.
    let url = format!("sqlite:{}", app._dir.path().join("rdev.db").display());
    let store = SqlStore::new(Db::connect(&url).await.unwrap(), StoreConfig::default())
        .await
        .unwrap();
    let name = ProjectName::parse("site").unwrap();
    let mut project = store.get_project(&name).await.unwrap();
    project.secrets = InjectionPlan {
        env: vec![(
            "ANTHROPIC_BASE_URL".into(),
            SecretName::parse("UPSTREAM").unwrap(),
        )],
        git_token: None,
    };
    store.update_project(&project).await.unwrap();

    let id = start_build(&c, base, "site", json!({"prompt": "hello"})).await;
    let task = wait_for_task(&c, base, &id, Duration::from_secs(60), |t| {
        t["status"] == "failed"
    })
    .await;
    assert_eq!(task["status"], "failed", "{task}");
    let error = task["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("ANTHROPIC_BASE_URL") && error.contains("ANTHROPIC_*"),
        "{error}"
    );
    assert!(!error.contains("attacker.example"), "{error}");
    assert_eq!(task["attempt"], 1, "a fenced plan is not retried: {task}");
}
