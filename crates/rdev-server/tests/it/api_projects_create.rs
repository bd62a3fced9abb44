//! `POST /projects` as one unit of work: the row is inserted first, so the store alone
//! decides a taken name (two creations racing for one name give one 201 and one 409
//! `conflict`, and the loser touches nothing), and a failure after the insert (a first
//! commit that cannot be rendered or pushed) leaves neither the row nor the repository
//! rdev made, while what was there before (a given repository, the project's secrets)
//! stays.

use std::{os::unix::fs::PermissionsExt, path::Path};

use rdev_testkit::pg::PgDatabase;
use serde_json::{json, Value};

use crate::common::{get_json, spawn_app, spawn_app_configured, spawn_app_with, TestApp};

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn git(repo: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Where rdev creates the repository of project `name`.
fn created_repo(app: &TestApp, name: &str) -> std::path::PathBuf {
    app._dir
        .path()
        .join("data/repos")
        .join(format!("{name}.git"))
}

/// The directories under the git root, sorted.
fn repos_on_disk(app: &TestApp) -> Vec<String> {
    let root = app._dir.path().join("data/repos");
    let mut names: Vec<String> = match std::fs::read_dir(&root) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// The secret names of `scope` the API lists (the signing secret is never listed).
async fn listed_secrets(c: &reqwest::Client, base: &str, scope: &str) -> Vec<String> {
    let list = get_json(c, format!("{base}/secrets?scope={scope}")).await;
    list["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect()
}

/// A template whose first commit cannot be written: its `.git/HEAD` collides with the
/// checkout's own, so rendering fails after the repository was created.
fn broken_template(root: &Path) {
    let dir = root.join("broken");
    std::fs::create_dir_all(dir.join(".git")).unwrap();
    std::fs::write(
        dir.join("template.toml"),
        "name = \"broken\"\ndescription = \"Renders over the checkout's git dir.\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("index.html"), "<h1>hello</h1>\n").unwrap();
    std::fs::write(dir.join(".git/HEAD"), "ref: refs/heads/nope\n").unwrap();
}

#[tokio::test]
async fn a_first_commit_that_cannot_be_rendered_leaves_neither_row_nor_created_repository() {
    let templates = tempfile::tempdir().unwrap();
    broken_template(templates.path());
    let roots = vec![templates.path().to_path_buf()];
    let app = spawn_app_configured(None, |c| c.template_dirs = roots).await;
    let c = reqwest::Client::new();
    let base = &app.address;
    // Stored before the project that will use it, as a deploy token usually is.
    let (status, body) = send(
        c.put(format!("{base}/secrets/project:site/DEPLOY_TOKEN"))
            .json(&json!({"value": "deploy-token-123"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");

    let (status, body) = send(
        c.post(format!("{base}/projects"))
            .json(&json!({"name": "site", "template": "broken"})),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "target_exists", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("could not initialise the repository"),
        "{message}"
    );

    let (status, _) = send(c.get(format!("{base}/projects/site"))).await;
    assert_eq!(status, 404, "the row is gone");
    let list = get_json(&c, format!("{base}/projects")).await;
    assert_eq!(list["projects"], json!([]));
    assert!(
        !created_repo(&app, "site").exists(),
        "the repository rdev created is gone"
    );
    assert_eq!(repos_on_disk(&app), Vec::<String>::new());
    assert_eq!(
        listed_secrets(&c, base, "project:site").await,
        ["DEPLOY_TOKEN"],
        "a secret that predates the project stays"
    );

    // Nothing is in the way of the name afterwards.
    let (status, body) =
        send(c.post(format!("{base}/projects")).json(
            &json!({"name": "site", "template": "static-site", "variables": {"title": "Site"}}),
        ))
        .await;
    assert_eq!(status, 201, "{body}");
    let head = git(
        &created_repo(&app, "site"),
        &["rev-parse", "refs/heads/main"],
    );
    assert_eq!(body["initial_commit"], head.as_str());
}

#[tokio::test]
async fn a_rejected_push_to_a_given_repository_removes_the_row_and_keeps_the_repository() {
    let app = spawn_app().await;
    let c = reqwest::Client::new();
    let base = &app.address;
    let theirs = app._dir.path().join("theirs.git");
    let init = std::process::Command::new("git")
        .args(["init", "--bare", "--quiet", "--initial-branch=main"])
        .arg(&theirs)
        .status()
        .unwrap();
    assert!(init.success());
    let hook = theirs.join("hooks/pre-receive");
    std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
    std::fs::write(&hook, "#!/bin/sh\necho 'pushes are closed' >&2\nexit 1\n").unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();

    let (status, body) = send(c.post(format!("{base}/projects")).json(&json!({
        "name": "site", "repo_url": theirs.to_string_lossy(), "template": "static-site",
        "variables": {"title": "Site"}
    })))
    .await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("could not initialise the repository"),
        "{body}"
    );
    let (status, _) = send(c.get(format!("{base}/projects/site"))).await;
    assert_eq!(status, 404, "the row is gone");
    assert!(theirs.join("HEAD").is_file(), "a given repository is kept");
    assert!(hook.is_file());
    assert_eq!(git(&theirs, &["rev-list", "--all", "--count"]), "0");
}

#[tokio::test]
async fn a_local_repo_url_git_cannot_clone_is_the_requests_fault() {
    let app = spawn_app().await;
    let c = reqwest::Client::new();
    let base = &app.address;
    let nowhere = app._dir.path().join("no-such-repo.git");
    let not_a_repo = app._dir.path().join("plain-dir");
    std::fs::create_dir_all(&not_a_repo).unwrap();
    for path in [nowhere, not_a_repo] {
        let (status, body) = send(c.post(format!("{base}/projects")).json(&json!({
            "name": "site", "repo_url": path.to_string_lossy(), "template": "static-site",
            "variables": {"title": "Site"}
        })))
        .await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["code"], "invalid_field", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("no repository git can clone at this path"),
            "{message}"
        );
        let (status, _) = send(c.get(format!("{base}/projects/site"))).await;
        assert_eq!(status, 404, "the row is gone");
    }
}

/// Two creations of each name at once: exactly one 201 and one 409 `conflict`; the
/// winner's repository has exactly its one first commit and nothing else is on disk.
async fn concurrent_creates_of_one_name_give_one_winner(app: TestApp) {
    let c = reqwest::Client::new();
    let base = &app.address;
    let given = app._dir.path().join("given.git");
    let init = std::process::Command::new("git")
        .args(["init", "--bare", "--quiet", "--initial-branch=main"])
        .arg(&given)
        .status()
        .unwrap();
    assert!(init.success());
    let bodies = [
        (
            "made",
            json!({"name": "made", "template": "static-site",
                        "variables": {"title": "Made"}}),
        ),
        (
            "given",
            json!({"name": "given", "repo_url": given.to_string_lossy(),
                         "template": "static-site", "variables": {"title": "Given"}}),
        ),
    ];
    for (name, body) in bodies {
        for round in 0..3 {
            let post = || c.post(format!("{base}/projects")).json(&body);
            let (a, b) = tokio::join!(send(post()), send(post()));
            let mut statuses = [a.0, b.0];
            statuses.sort_unstable();
            assert_eq!(statuses, [201, 409], "{name} #{round}: {a:?} {b:?}");
            let (won, lost) = if a.0 == 201 { (a.1, b.1) } else { (b.1, a.1) };
            assert_eq!(lost["error"]["code"], "conflict", "{lost}");

            let repo = match name {
                "made" => created_repo(&app, name),
                _ => given.clone(),
            };
            assert_eq!(git(&repo, &["rev-list", "--all", "--count"]), "1");
            let head = git(&repo, &["rev-parse", "refs/heads/main"]);
            assert_eq!(won["initial_commit"], head.as_str(), "{won}");
            let list = get_json(&c, format!("{base}/projects")).await;
            let names: Vec<&str> = list["projects"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            assert!(names.contains(&name), "{names:?}");

            let (status, report) = send(c.delete(format!("{base}/projects/{name}"))).await;
            assert_eq!(status, 200, "{report}");
            if name == "given" {
                // Empty again for the next round (rdev keeps a given repository).
                git(&repo, &["update-ref", "-d", "refs/heads/main"]);
            }
            assert_eq!(repos_on_disk(&app), Vec::<String>::new(), "{name} #{round}");
        }
    }
}

#[tokio::test]
async fn concurrent_creates_of_one_name_give_one_201_and_one_409_on_sqlite() {
    concurrent_creates_of_one_name_give_one_winner(spawn_app().await).await;
}

#[tokio::test]
async fn concurrent_creates_of_one_name_give_one_201_and_one_409_on_postgres() {
    concurrent_creates_of_one_name_give_one_winner(
        spawn_app_with(Some(PgDatabase::create().await)).await,
    )
    .await;
}

/// `max_parallel_builds`: 1 when not given, set at creation and by a change, shown by
/// `GET`, and 422 `invalid_field` outside 1..=64 (in a creation and in a change alike).
#[tokio::test]
async fn max_parallel_builds_defaults_to_one_and_is_checked() {
    let app = spawn_app().await;
    let (c, base) = (reqwest::Client::new(), app.address.clone());
    let (status, body) = send(
        c.post(format!("{base}/projects"))
            .json(&json!({"name": "one", "repo_url": "/srv/git/one.git"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["max_parallel_builds"], 1);
    let (status, body) = send(c.post(format!("{base}/projects")).json(
        &json!({"name": "three", "repo_url": "/srv/git/three.git", "max_parallel_builds": 3}),
    ))
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        get_json(&c, format!("{base}/projects/three")).await["max_parallel_builds"],
        3
    );
    for bad in [0, 65] {
        let (status, err) = send(c.post(format!("{base}/projects")).json(
            &json!({"name": "bad", "repo_url": "/srv/git/bad.git", "max_parallel_builds": bad}),
        ))
        .await;
        assert_eq!(
            (status, &err["error"]["code"]),
            (422, &json!("invalid_field"))
        );
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains("max_parallel_builds"), "{message}");
        let (status, err) = send(
            c.patch(format!("{base}/projects/three"))
                .json(&json!({"max_parallel_builds": bad})),
        )
        .await;
        assert_eq!(
            (status, &err["error"]["code"]),
            (422, &json!("invalid_field"))
        );
    }
    let (status, body) = send(
        c.patch(format!("{base}/projects/one"))
            .json(&json!({"max_parallel_builds": 64})),
    )
    .await;
    assert_eq!((status, &body["max_parallel_builds"]), (200, &json!(64)));
    assert_eq!(
        get_json(&c, format!("{base}/projects/one")).await["max_parallel_builds"],
        64
    );
    assert_eq!(
        get_json(&c, format!("{base}/projects/three")).await["max_parallel_builds"],
        3,
        "a refused change changes nothing"
    );
}
