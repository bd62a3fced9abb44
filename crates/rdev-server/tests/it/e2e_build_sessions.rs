//! Sessions that resume, end to end: the `session_id` in a build's result continues that
//! conversation in a later build of the same project, each build in a checkout of its own:
//! the real `claude` CLI (on SQLite and PostgreSQL) and the real `opencode serve` (SQLite)
//! against the scripted model, whose recorded requests show what the second build sent. A
//! session of another project, of another provider or of none is 422 `unknown_session`
//! before anything is queued, and a deleted project's sessions go with it.

use std::time::Duration;

use rdev_testkit::{claude_bin, claude_env, git::git, ScriptedModel, TEST_API_KEY};
use serde_json::{json, Value};

use crate::common::{self, spawn_app_configured, start_build, wait_for_task, TestApp};

struct World {
    app: TestApp,
    model: ScriptedModel,
    dir: tempfile::TempDir,
}

/// A bare repository `<dir>/<name>.git` whose `main` has a commit (made the first time).
fn seeded_remote(dir: &std::path::Path, name: &str) -> String {
    let remote = dir
        .join(format!("{name}.git"))
        .to_string_lossy()
        .into_owned();
    if std::path::Path::new(&remote).exists() {
        return remote;
    }
    let seed = dir.join(format!("seed-{name}"));
    let seed = seed.to_string_lossy();
    git(&["init", "--bare", "--quiet", "-b", "main", &remote]);
    git(&["init", "--quiet", "-b", "main", &seed]);
    std::fs::write(format!("{seed}/README.md"), "# site\n").unwrap();
    git(&["-C", &seed, "add", "."]);
    git(&["-C", &seed, "commit", "--quiet", "-m", "init"]);
    git(&["-C", &seed, "push", "--quiet", &remote, "main"]);
    remote
}

async fn world(pg: bool, opencode: bool) -> World {
    let dir = tempfile::tempdir().unwrap();
    let model = ScriptedModel::start().await.unwrap();
    let db = if pg {
        Some(rdev_testkit::pg::PgDatabase::create().await)
    } else {
        None
    };
    let (base, state) = (model.base_url(), dir.path().join("claude-state"));
    let oc = opencode.then(|| common::opencode_config(&base, "test-key", dir.path()));
    let app = spawn_app_configured(db, move |c| {
        c.worker_concurrency = 1;
        if let Some(oc) = oc {
            c.agents.enabled = vec!["claude-code".into(), "opencode".into()];
            c.agents.opencode = oc;
        }
        let cc = &mut c.agents.claude_code;
        cc.bin = Some(claude_bin());
        cc.config_root = Some(state);
        cc.env = claude_env(&base, TEST_API_KEY);
    })
    .await;
    let w = World { app, model, dir };
    for name in ["site", "other"] {
        create_project(&w, name).await;
    }
    w
}

async fn create_project(w: &World, name: &str) {
    let remote = seeded_remote(w.dir.path(), name);
    let r = reqwest::Client::new()
        .post(format!("{}/projects", w.app.address))
        .json(&json!({"name": name, "repo_url": remote}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

/// Builds `prompt` in `project` (resuming `session` if given) and waits for its end.
async fn built(w: &World, project: &str, body: Value) -> Value {
    let client = reqwest::Client::new();
    let id = start_build(&client, &w.app.address, project, body).await;
    let task = wait_for_task(
        &client,
        &w.app.address,
        &id,
        Duration::from_secs(240),
        |t| {
            matches!(
                t["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            )
        },
    )
    .await;
    assert_eq!(task["status"], "completed", "{task}");
    task
}

fn session_of(task: &Value) -> String {
    task["result"]["agent"]["session_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no session in {task}"))
        .to_owned()
}

/// A build request that must be refused: its status and error code, and that the number
/// of tasks did not change.
async fn refused(w: &World, project: &str, body: Value) -> (u16, String) {
    let client = reqwest::Client::new();
    let count = || async {
        let all = common::get_json(&client, format!("{}/tasks", w.app.address)).await;
        all["tasks"].as_array().map_or(0, Vec::len)
    };
    let before = count().await;
    let r = client
        .post(format!("{}/project/{project}/build", w.app.address))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let answer: Value = r.json().await.unwrap();
    assert_eq!(count().await, before, "nothing queued: {answer}");
    let code = answer["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (status, code)
}

/// The texts of the first agent request whose last human turn holds `marker`, each with
/// its role, in order: what that build's first model request carried.
fn first_request_with(model: &ScriptedModel, marker: &str) -> Vec<(String, String)> {
    let request = model
        .requests()
        .into_iter()
        .find(|r| {
            r.path == "/v1/messages"
                && !r.side
                && r.messages
                    .iter()
                    .any(|m| m.texts.iter().any(|t| t.contains(marker)))
        })
        .unwrap_or_else(|| panic!("no model request carried {marker:?}"));
    request
        .messages
        .into_iter()
        .flat_map(|m| {
            let role = m.role;
            m.texts.into_iter().map(move |t| (role.clone(), t))
        })
        .collect()
}

/// Where in `texts` a text of `role` holding `needle` is.
fn position(texts: &[(String, String)], role: &str, needle: &str) -> usize {
    texts
        .iter()
        .position(|(r, t)| r == role && t.contains(needle))
        .unwrap_or_else(|| panic!("no {role} text with {needle:?} in {texts:#?}"))
}

async fn claude_session_resumes_in_a_later_build(pg: bool) {
    let w = world(pg, false).await;
    let first = built(
        &w,
        "site",
        json!({"prompt": "First build\n@@write notes.txt\nfirst\n@@end\n@@reply first done"}),
    )
    .await;
    let session = session_of(&first);
    let second = built(
        &w,
        "site",
        json!({"prompt": "Second build\n@@bash ls\n@@reply second done", "session_id": session}),
    )
    .await;
    assert_eq!(second["result"]["output"], "second done", "{second}");
    assert_eq!(
        session_of(&second),
        session,
        "the same conversation goes on"
    );
    let texts = first_request_with(&w.model, "Second build");
    let asked = position(&texts, "user", "First build");
    let answered = position(&texts, "assistant", "first done");
    assert!(asked < answered && answered < position(&texts, "user", "Second build"));

    // Another project, an unknown id: refused before anything is queued.
    let other = refused(&w, "other", json!({"prompt": "x", "session_id": session})).await;
    assert_eq!(other, (422, "unknown_session".to_owned()));
    let unknown = json!({"prompt": "x", "session_id": "0197a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"});
    let unknown = refused(&w, "site", unknown).await;
    assert_eq!(unknown, (422, "unknown_session".to_owned()));

    // Deleting the project deletes its sessions: its files on this node, and a project
    // created again under the name cannot resume them.
    let kept = w.app._dir.path().join("data/sessions/site");
    assert!(kept
        .join("claude-code")
        .join(format!("{session}.jsonl"))
        .is_file());
    let r = reqwest::Client::new()
        .delete(format!("{}/projects/site", w.app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!kept.exists(), "session files removed with the project");
    create_project(&w, "site").await;
    let again = refused(&w, "site", json!({"prompt": "x", "session_id": session})).await;
    assert_eq!(again, (422, "unknown_session".to_owned()));
}

#[tokio::test]
async fn claude_session_resumes_in_a_later_build_on_sqlite() {
    claude_session_resumes_in_a_later_build(false).await;
}

#[tokio::test]
async fn claude_session_resumes_in_a_later_build_on_postgres() {
    claude_session_resumes_in_a_later_build(true).await;
}

/// OpenCode binds a session to the checkout it was made in, so a later build recreates it
/// in its own checkout with the earlier messages; the new session is the one to resume next.
#[tokio::test]
async fn opencode_session_is_recreated_in_a_later_build() {
    let w = world(false, true).await;
    let oc = |prompt: &str, session: Option<&str>| json!({"prompt": prompt, "provider": "opencode", "session_id": session});
    let first = built(
        &w,
        "site",
        oc(
            "OC first build\n@@write a.txt\nhello\n@@end\n@@reply oc first done",
            None,
        ),
    )
    .await;
    let s1 = session_of(&first);
    let second = built(
        &w,
        "site",
        oc("OC second build\n@@reply oc second done", Some(&s1)),
    )
    .await;
    assert_eq!(second["result"]["output"], "oc second done", "{second}");
    let s2 = session_of(&second);
    assert_ne!(s2, s1, "recreated in the new checkout");
    let texts = first_request_with(&w.model, "OC second build");
    assert!(
        position(&texts, "user", "OC first build") < position(&texts, "user", "OC second build")
    );
    position(&texts, "user", "oc first done");

    // The recreated session resumes in turn, with both earlier builds.
    let third = built(
        &w,
        "site",
        oc("OC third build\n@@reply oc third done", Some(&s2)),
    )
    .await;
    assert_eq!(third["result"]["output"], "oc third done", "{third}");
    let texts = first_request_with(&w.model, "OC third build");
    position(&texts, "user", "OC first build");
    position(&texts, "user", "oc second done");

    // A session resumes only with the provider that made it, and only in its project.
    let claude = json!({"prompt": "x", "provider": "claude-code", "session_id": s2});
    assert_eq!(
        refused(&w, "site", claude).await,
        (422, "unknown_session".to_owned())
    );
    let other = refused(&w, "other", oc("x", Some(&s2))).await;
    assert_eq!(other, (422, "unknown_session".to_owned()));
}
