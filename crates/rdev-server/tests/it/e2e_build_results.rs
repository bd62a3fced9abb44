//! End to end, what a build leaves behind on every outcome, with real git (bare
//! repositories), the real `claude` CLI against the scripted model and the fake Woodpecker,
//! on SQLite and PostgreSQL: without `auto_deploy` the work goes to the branch
//! `rdev/<task id>` and the default branch stays where it was; a CI failure after the push
//! keeps the commit and the pipeline (with its web page) in the failed task's result and
//! callback; a project naming its Woodpecker repository `owner/name` builds, its pipeline
//! found on the second page behind newer pushes, other branches and other events.

use std::time::Duration;

use rdev_testkit::{
    git::{git, remote_head},
    woodpecker::{FakeWoodpecker, NewPipeline},
};
use serde_json::{json, Value};

use crate::e2e_build::{build, delivered_within, world, World};

/// Creates project `site` on `w`'s remote with the extra fields `fields`.
async fn create_project(w: &World, fields: Value) {
    let mut body = json!({"name": "site", "repo_url": w.remote,
        "deploy_url_pattern": "https://{project}.example.com"});
    for (k, v) in fields.as_object().unwrap() {
        body[k] = v.clone();
    }
    let r = reqwest::Client::new()
        .post(format!("{}/projects", w.app.address))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

/// Runs a build of `body` (with the receiver as its callback) to its delivered callback;
/// returns the task and the callback's body.
async fn run_build(w: &World, mut body: Value) -> (Value, Value) {
    body["callback_url"] = json!(w.receiver.url());
    let id = build(w, body).await;
    let t = delivered_within(w, &id, Duration::from_secs(120)).await;
    let callback = w
        .receiver
        .accepted()
        .into_iter()
        .map(|c| c.json())
        .find(|c| c["task_id"] == id.as_str())
        .expect("the task's callback");
    (t, callback)
}

/// Plays the forge's push webhook for Woodpecker repository `repo_id`: each new head of
/// `main` gets what `on_push` adds for it.
fn ci_hook(w: &World, repo_id: i64, on_push: impl Fn(&FakeWoodpecker, i64, &str) + Send + 'static) {
    let (remote, wp, stop) = (w.remote.clone(), w.woodpecker.clone(), w.forge.clone());
    tokio::spawn(async move {
        let mut seen = remote_head(&remote);
        while !stop.is_cancelled() {
            let head = remote_head(&remote);
            if head != seen {
                if let Some(sha) = &head {
                    on_push(&wp, repo_id, sha);
                }
                seen = head;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

/// The remote's branches.
fn branches(remote: &str) -> Vec<String> {
    let out = git(&[
        "--git-dir",
        remote,
        "for-each-ref",
        "--format=%(refname)",
        "refs/heads",
    ]);
    out.lines().map(str::to_owned).collect()
}

async fn without_auto_deploy_the_work_goes_to_the_tasks_branch(pg: bool) {
    let w = world(pg).await;
    // The repository's first commit, rendered at creation, is on main.
    create_project(
        &w,
        json!({"template": "static-site", "variables": {"title": "Kept"},
               "woodpecker_repo_id": 1}),
    )
    .await;
    let main = remote_head(&w.remote).expect("the first commit");

    let prompt = "Take notes.\n@@write notes.txt\nkept\n@@end\n@@reply Noted.";
    let (t, cb) = run_build(&w, json!({"prompt": prompt})).await;
    let id = cb["task_id"].as_str().unwrap().to_owned();
    assert_eq!(cb["status"], "completed", "{cb}");
    let branch = format!("rdev/{id}");
    let pushed = git(&[
        "--git-dir",
        &w.remote,
        "rev-parse",
        &format!("refs/heads/{branch}"),
    ]);
    let artifacts = &cb["result"]["artifacts"];
    assert_eq!(
        artifacts,
        &json!({"commit_sha": pushed, "deploy_url": null, "branch": branch}),
        "{cb}"
    );
    assert!(
        cb["result"].get("pipeline").is_none(),
        "no CI followed: {cb}"
    );
    assert_eq!(t["result"]["artifacts"], *artifacts);
    assert_eq!(
        remote_head(&w.remote),
        Some(main.clone()),
        "main did not move"
    );
    assert_eq!(
        git(&[
            "--git-dir",
            &w.remote,
            "show",
            &format!("{branch}:notes.txt")
        ]),
        "kept"
    );
    let parent = git(&["--git-dir", &w.remote, "rev-parse", &format!("{pushed}^")]);
    assert_eq!(parent, main, "the work sits on the default branch");
    let msg = git(&["--git-dir", &w.remote, "log", "-1", "--format=%B", &pushed]);
    assert!(msg.contains(&format!("Rdev-Task: {id}")), "{msg}");
    assert!(
        w.woodpecker.requests().is_empty(),
        "nothing deployed, CI not followed"
    );

    // Nothing changed: nothing committed, no branch, as before.
    let (_, cb) = run_build(&w, json!({"prompt": "@@reply Nothing to do."})).await;
    assert_eq!(cb["status"], "completed", "{cb}");
    assert_eq!(
        cb["result"]["artifacts"],
        json!({"commit_sha": null, "deploy_url": null})
    );
    assert_eq!(cb["result"]["output"], "Nothing to do.");
    assert_eq!(
        branches(&w.remote),
        ["refs/heads/main".to_owned(), format!("refs/heads/{branch}")],
        "no branch for {}",
        cb["task_id"]
    );
}

#[tokio::test]
async fn work_without_auto_deploy_is_kept_on_its_branch_on_sqlite() {
    without_auto_deploy_the_work_goes_to_the_tasks_branch(false).await;
}

#[tokio::test]
async fn work_without_auto_deploy_is_kept_on_its_branch_on_postgres() {
    without_auto_deploy_the_work_goes_to_the_tasks_branch(true).await;
}

async fn a_ci_failure_keeps_the_commit_and_the_pipeline(pg: bool) {
    let w = world(pg).await;
    w.woodpecker.add_repo(2);
    ci_hook(&w, 2, |wp, repo, sha| {
        let n = wp.add_pipeline(repo, sha, "main");
        wp.script(repo, n, &["running", "failure"]);
    });
    create_project(&w, json!({"woodpecker_repo_id": 2})).await;
    let prompt = "@@write index.html\n<h1>Broken build</h1>\n@@end\n@@reply Done.";
    let (t, cb) = run_build(&w, json!({"prompt": prompt, "auto_deploy": true})).await;
    let head = remote_head(&w.remote).expect("pushed before CI ran");
    assert_eq!(cb["status"], "failed", "{cb}");
    assert_eq!(t["attempt"], 1, "not retried: {t}");
    assert_eq!(cb["error"], "CI pipeline #1 ended with status failure");
    let result = &cb["result"];
    assert_eq!(
        result["artifacts"],
        json!({"commit_sha": head, "deploy_url": null}),
        "{cb}"
    );
    let url = format!("{}/repos/2/pipeline/1", w.woodpecker.url());
    assert_eq!(
        result["pipeline"],
        json!({"number": 1, "status": "failure", "url": url})
    );
    assert_eq!(
        result["agent"]["pipeline"],
        json!({"number": 1, "status": "failure"})
    );
    assert_eq!(result["output"], "Done.");
    assert!(cb["duration_ms"].as_u64().is_some(), "{cb}");
    assert_eq!(t["status"], "failed");
    assert_eq!(t["result"]["pipeline"]["url"], url.as_str());
}

#[tokio::test]
async fn a_ci_failure_keeps_the_commit_and_the_pipeline_on_sqlite() {
    a_ci_failure_keeps_the_commit_and_the_pipeline(false).await;
}

#[tokio::test]
async fn a_ci_failure_keeps_the_commit_and_the_pipeline_on_postgres() {
    a_ci_failure_keeps_the_commit_and_the_pipeline(true).await;
}

async fn a_repository_named_owner_name_builds_and_its_pipeline_is_found_on_page_two(pg: bool) {
    let w = world(pg).await;
    w.woodpecker.add_named_repo(3, "Acme/Site");
    ci_hook(&w, 3, |wp, repo, sha| {
        // All at once, ours first (the oldest): 50 newer pushes of other commits to main
        // fill the first page; the same commit pushed to another branch and run by hand are
        // newer still, and fail.
        let others: Vec<String> = (0..50).map(|i| format!("{:040x}", i + 1)).collect();
        let mut all = vec![NewPipeline::push(sha, "main")];
        all.extend(others.iter().map(|c| NewPipeline {
            status: "success",
            ..NewPipeline::push(c, "main")
        }));
        all.push(NewPipeline {
            status: "failure",
            ..NewPipeline::push(sha, "feature")
        });
        all.push(NewPipeline {
            event: "manual",
            status: "failure",
            ..NewPipeline::push(sha, "main")
        });
        let numbers = wp.add_pipelines(repo, &all);
        wp.script(repo, numbers[0], &["running", "success"]);
    });
    create_project(&w, json!({"woodpecker_repo": "acme/site"})).await;
    let prompt = "@@write index.html\n<h1>Named</h1>\n@@end\n@@reply Deployed.";
    let (t, cb) = run_build(&w, json!({"prompt": prompt, "auto_deploy": true})).await;
    assert_eq!(cb["status"], "completed", "{cb}");
    let head = remote_head(&w.remote).expect("pushed");
    let result = &cb["result"];
    assert_eq!(
        result["artifacts"],
        json!({"commit_sha": head, "deploy_url": "https://site.example.com"})
    );
    let url = format!("{}/repos/3/pipeline/1", w.woodpecker.url());
    assert_eq!(
        result["pipeline"],
        json!({"number": 1, "status": "success", "url": url}),
        "{cb}"
    );
    assert_eq!(t["result"]["pipeline"], result["pipeline"]);
    let uris: Vec<String> = w.woodpecker.requests().into_iter().map(|r| r.uri).collect();
    assert_eq!(uris[0], "/api/repos/lookup/acme/site", "{uris:?}");
    let page2 = "/api/repos/3/pipelines?page=2&perPage=50&branch=main&event=push";
    assert!(uris.iter().any(|u| u == page2), "{uris:?}");
    let followed: Vec<&String> = uris
        .iter()
        .filter(|u| u.starts_with("/api/repos/3/pipelines/"))
        .collect();
    assert!(
        !followed.is_empty() && followed.iter().all(|u| *u == "/api/repos/3/pipelines/1"),
        "only our pipeline was followed: {uris:?}"
    );
}

#[tokio::test]
async fn a_repository_named_owner_name_builds_on_sqlite() {
    a_repository_named_owner_name_builds_and_its_pipeline_is_found_on_page_two(false).await;
}

#[tokio::test]
async fn a_repository_named_owner_name_builds_on_postgres() {
    a_repository_named_owner_name_builds_and_its_pipeline_is_found_on_page_two(true).await;
}
