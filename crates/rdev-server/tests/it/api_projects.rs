//! Project CRUD over HTTP on both backends, every bad-name and bad-field case, and the
//! fence around the environment a project's secret plan may set (at the API and, for a
//! plan that got into the store some other way, when a build's secrets are injected).

use std::time::Duration;

use rdev_core::{
    InjectionPlan, ProjectName, ProjectStore, SecretName, SecretRepository, SecretScope, WorkQueue,
};
use rdev_store::{Db, SqlSecretRepository, SqlStore, StoreConfig};
use rdev_testkit::pg::PgDatabase;
use serde_json::{json, Value};

use crate::common::{
    get_json, spawn_app, spawn_app_configured, spawn_app_with, start_build, wait_for_task, TestApp,
};

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
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["project"], "my-site");
    assert_eq!(
        report["repository"]["outcome"], "kept",
        "a repo_url is never removed: {report}"
    );
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

/// A connection pool of its own to the app's database.
async fn app_db(app: &TestApp) -> Db {
    let url = match &app._pg {
        Some(pg) => pg.url.clone(),
        None => format!("sqlite:{}", app._dir.path().join("rdev.db").display()),
    };
    Db::connect(&url).await.unwrap()
}

/// The app's queue as a worker of another node sees it.
async fn other_node(app: &TestApp) -> SqlStore {
    SqlStore::new(app_db(app).await, StoreConfig::default())
        .await
        .unwrap()
}

/// The names of every secret stored in `scope`, reserved ones included.
async fn stored_secrets(app: &TestApp, scope: &str) -> Vec<String> {
    SqlSecretRepository::new(app_db(app).await)
        .list(Some(&SecretScope::parse(scope).unwrap()))
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name.to_string())
        .collect()
}

fn git(repo: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(args)
        .output()
        .unwrap()
}

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Deleting a project cancels its queued and running tasks (the running one held by a
/// worker of another node, which finds its lease gone), deletes its secrets and signing
/// secret, removes the repository rdev created and keeps one given as `repo_url` (even
/// under the git root); the name created again starts empty.
async fn delete_is_complete(app: TestApp) {
    let c = reqwest::Client::new();
    let base = &app.address;
    let create = |body: Value| c.post(format!("{base}/projects")).json(&body);
    let (status, acme) = send(create(json!({"name": "acme", "template": "static-site",
        "variables": {"title": "Old Title"}})))
    .await;
    assert_eq!(status, 201, "{acme}");
    let repo = acme["repo_url"].as_str().unwrap().to_owned();
    assert_eq!(
        acme["created_repo"],
        repo.as_str(),
        "rdev records what it created"
    );
    let old_sha = acme["initial_commit"].as_str().unwrap().to_owned();
    let old_hook = acme["webhook_secret"].as_str().unwrap().to_owned();

    // A repository the user made, exactly where rdev would have put one.
    let git_root = app._dir.path().join("data").join("repos");
    let theirs = git_root.join("theirs.git");
    std::fs::create_dir_all(&git_root).unwrap();
    let init = std::process::Command::new("git")
        .args(["init", "--bare", "--quiet"])
        .arg(&theirs)
        .status()
        .unwrap();
    assert!(init.success());
    let theirs = theirs.to_string_lossy().into_owned();
    let (status, body) = send(create(json!({"name": "theirs", "repo_url": theirs}))).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["created_repo"], Value::Null);

    for scope in ["project:acme", "project:theirs", "global"] {
        let (status, body) = send(
            c.put(format!("{base}/secrets/{scope}/DEPLOY_TOKEN"))
                .json(&json!({"value": "deploy-token-123"})),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    // One task running on another node's worker, one queued under an idempotency key.
    let running = start_build(&c, base, "acme", json!({"prompt": "first"})).await;
    let remote = other_node(&app).await;
    let lease = remote
        .claim("remote-worker", 1, Duration::from_secs(60))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(lease.task.id.to_string(), running);
    let (status, body) = send(
        c.post(format!("{base}/project/acme/build"))
            .header("idempotency-key", "bot-msg-1")
            .json(&json!({"prompt": "second"})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let queued = body["task_id"].as_str().unwrap().to_owned();

    let (status, report) = send(c.delete(format!("{base}/projects/acme"))).await;
    assert_eq!(status, 200, "{report}");
    let mut cancelled: Vec<&str> = report["cancelled_tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    cancelled.sort_unstable();
    let mut expected = [running.as_str(), queued.as_str()];
    expected.sort_unstable();
    assert_eq!(cancelled, expected, "{report}");
    assert_eq!(
        report["secrets_removed"],
        json!(["DEPLOY_TOKEN", "RDEV_WEBHOOK_SECRET"])
    );
    assert_eq!(
        report["repository"],
        json!({"outcome": "removed", "path": repo})
    );

    // Tasks: both cancelled; the remote worker's lease is gone, so it stops.
    for id in [&running, &queued] {
        let task = get_json(&c, format!("{base}/tasks/{id}")).await;
        assert_eq!(task["status"], "cancelled", "{task}");
    }
    let beat = remote
        .heartbeat(&[lease.key()], Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(beat.lost.len(), 1, "the remote attempt must stop: {beat:?}");
    // Secrets: the project's are gone, the signing secret too; others stay.
    assert!(stored_secrets(&app, "project:acme").await.is_empty());
    assert_eq!(stored_secrets(&app, "global").await, ["DEPLOY_TOKEN"]);
    assert_eq!(
        stored_secrets(&app, "project:theirs").await,
        ["DEPLOY_TOKEN", "RDEV_WEBHOOK_SECRET"]
    );
    // The repository rdev created is gone.
    assert!(!std::path::Path::new(&repo).exists(), "{repo}");

    // The user's repository stays, though it lies under the git root.
    let (status, report) = send(c.delete(format!("{base}/projects/theirs"))).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["repository"]["outcome"], "kept", "{report}");
    assert!(std::path::Path::new(&theirs).join("HEAD").is_file());
    // And rdev will not adopt it as a repository of its own either.
    let (status, body) = send(create(json!({"name": "theirs"}))).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "repository_exists");
    assert!(std::path::Path::new(&theirs).join("HEAD").is_file());

    // Created again, the name starts empty.
    let (status, again) = send(create(json!({"name": "acme", "template": "static-site",
        "variables": {"title": "New Title"}})))
    .await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(again["repo_url"], repo.as_str());
    assert_ne!(again["webhook_secret"], old_hook.as_str());
    let count = git(&repo, &["rev-list", "--count", "main"]);
    assert_eq!(String::from_utf8_lossy(&count.stdout).trim(), "1");
    assert!(
        !git(&repo, &["cat-file", "-e", &old_sha]).status.success(),
        "no object of the old repository"
    );
    assert_eq!(
        stored_secrets(&app, "project:acme").await,
        ["RDEV_WEBHOOK_SECRET"],
        "only the new signing secret"
    );
    for status in ["queued", "running"] {
        let live = get_json(&c, format!("{base}/tasks?project=acme&status={status}")).await;
        assert_eq!(live["tasks"], json!([]), "{status}: {live}");
    }
    let (status, body) = send(
        c.post(format!("{base}/project/acme/build"))
            .header("idempotency-key", "bot-msg-1")
            .json(&json!({"prompt": "second"})),
    )
    .await;
    assert_eq!(
        status, 202,
        "the old key names no task of the new project: {body}"
    );
    assert_ne!(body["task_id"], queued.as_str());
}

#[tokio::test]
async fn delete_is_complete_on_sqlite() {
    delete_is_complete(spawn_app().await).await;
}

#[tokio::test]
async fn delete_is_complete_on_postgres() {
    delete_is_complete(spawn_app_with(Some(PgDatabase::create().await)).await).await;
}

#[tokio::test]
async fn created_repo_cannot_be_patched() {
    let app = spawn_app().await;
    let c = reqwest::Client::new();
    let base = &app.address;
    let (status, body) = send(
        c.post(format!("{base}/projects"))
            .json(&json!({"name": "p", "repo_url": "/srv/git/p.git"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = send(
        c.patch(format!("{base}/projects/p"))
            .json(&json!({"created_repo": "/srv/git/p.git"})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("created_repo"));
    let shown = get_json(&c, format!("{base}/projects/p")).await;
    assert_eq!(shown["created_repo"], Value::Null);
    // Unchanged, it may ride along in a patch built from what GET answered.
    let mut whole = shown.clone();
    whole["default_branch"] = json!("trunk");
    let (status, body) = send(c.patch(format!("{base}/projects/p")).json(&whole)).await;
    assert_eq!(status, 200, "{body}");
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

/// `push_protection` is `block` unless set, takes `block` or `warn` only, and its
/// allow-list takes the supported glob patterns only, at creation and in a patch.
#[tokio::test]
async fn push_protection_settings_default_to_block_and_are_checked() {
    let app = spawn_app().await;
    let c = reqwest::Client::new();
    let base = &app.address;
    let r = c
        .post(format!("{base}/projects"))
        .json(&json!({"name": "site", "repo_url": "/srv/git/site.git"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["push_protection"], "block");
    assert_eq!(p["push_protection_allow"], json!([]));

    let r = c
        .patch(format!("{base}/projects/site"))
        .json(&json!({"push_protection": "warn", "push_protection_allow": ["tests/fixtures/", "*.pem"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let shown = get_json(&c, format!("{base}/projects/site")).await;
    assert_eq!(shown["push_protection"], "warn");
    assert_eq!(
        shown["push_protection_allow"],
        json!(["tests/fixtures/", "*.pem"])
    );

    for patch in [
        json!({"push_protection": "off"}),
        json!({"push_protection_allow": ["/etc/*.pem"]}),
        json!({"push_protection_allow": ["[ab].pem"]}),
        json!({"push_protection_allow": ["a/../b"]}),
    ] {
        let r = c
            .patch(format!("{base}/projects/site"))
            .json(&patch)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{patch}");
    }
    let r = c
        .post(format!("{base}/projects"))
        .json(
            &json!({"name": "other", "repo_url": "/srv/git/o.git", "push_protection_allow": [""]}),
        )
        .send()
        .await
        .unwrap();
    assert_unprocessable(r, "invalid_field", "push_protection_allow").await;
    let shown = get_json(&c, format!("{base}/projects/site")).await;
    assert_eq!(shown["push_protection"], "warn", "nothing changed");
}

/// A new project's first commit is scanned before it is pushed, like a build's: a
/// credential in a template variable is refused (422 `secret_in_commit`), and the
/// repository rdev made for it is gone again; with `warn` it is pushed.
#[tokio::test]
async fn a_secret_in_a_new_projects_first_commit_is_not_pushed() {
    let app = spawn_app().await;
    let c = reqwest::Client::new();
    let token = format!("ghp_{}", "aB3dE5gH7jK9mN1pQ2".repeat(2));
    let r = c
        .post(format!("{}/projects", app.address))
        .json(&json!({"name": "leaky", "template": "static-site", "variables": {"title": token}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["code"], "secret_in_commit", "{err}");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains("index.html:"), "{message}");
    assert!(message.contains("github-pat"), "{message}");
    assert!(!message.contains(&token), "{message}");
    let shown = c
        .get(format!("{}/projects/leaky", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(shown.status(), 404, "the project was not created");
    let repo = app._dir.path().join("data/repos/leaky.git");
    assert!(!repo.exists(), "the repository rdev made is removed again");

    let r = c
        .post(format!("{}/projects", app.address))
        .json(
            &json!({"name": "leaky", "template": "static-site", "variables": {"title": token},
                      "push_protection": "warn"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "warn pushes");
}
