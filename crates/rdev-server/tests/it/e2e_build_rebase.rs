//! End to end, a default branch that moves while the agent runs (a person pushing, or
//! another build of a project with `max_parallel_builds` above 1), with real git (a bare
//! remote), the real `claude` CLI against the scripted model, on SQLite and PostgreSQL.
//! The agent's first step waits for a file the test writes into its worktree once it has
//! pushed a commit of its own to `main`, so the push always lands between the checkout and
//! rdev's push. A change to another file is rebased onto the new head and pushed without
//! running the agent again; a change to the same lines ends the task `push_conflict`, its
//! work on `rdev/<task id>` and `main` untouched by rdev.

use std::{path::PathBuf, time::Duration};

use rdev_testkit::git::{git, remote_head};
use serde_json::{json, Value};

use crate::e2e_build::{build, delivered_within, task, world, World};

/// Gives `w`'s empty remote a first commit with `README.md` and creates project `site`
/// on it (no CI followed).
async fn seeded_project(w: &World) -> String {
    let seed = w.app._dir.path().join("seed");
    let seed_s = seed.to_string_lossy();
    git(&["init", "--quiet", "-b", "main", &seed_s]);
    std::fs::write(seed.join("README.md"), "hello\n").unwrap();
    git(&["-C", &seed_s, "add", "."]);
    git(&["-C", &seed_s, "commit", "--quiet", "-m", "seed"]);
    git(&["-C", &seed_s, "push", "--quiet", &w.remote, "main"]);
    let r = reqwest::Client::new()
        .post(format!("{}/projects", w.app.address))
        .json(&json!({"name": "site", "repo_url": w.remote}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    remote_head(&w.remote).expect("the seed commit")
}

/// The agent's script: wait (bounded) for `.go` in its worktree and remove it, then write
/// `file` with `content` (through the shell: Claude Code's Write tool refuses to replace a
/// file it has not read).
fn gated_prompt(file: &str, content: &str) -> String {
    format!(
        "Change {file}.\n\
         @@bash for i in $(seq 1 1200); do [ -e .go ] && break; sleep 0.1; done; rm -f .go\n\
         @@bash echo {content} > {file}\n@@reply Changed."
    )
}

/// Waits until the agent of task `id` runs its first (gating) step and returns its
/// worktree, found under the app's data directory by the task's id.
async fn gated_worktree(w: &World, id: &str) -> PathBuf {
    let work = w.app._dir.path().join("data/git/work");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let served = w.model.requests().iter().any(|r| r.step == Some(0));
        let dir = std::fs::read_dir(&work).ok().and_then(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.to_string_lossy().contains(id))
        });
        if let (true, Some(dir)) = (served, dir) {
            return dir;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent never reached its first step: {}",
            task(w, id).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Pushes a commit writing `file` = `content` to the remote's `main`, as a person would.
fn someone_pushes(w: &World, file: &str, content: &str) -> String {
    let clone = w.app._dir.path().join(format!("person-{file}"));
    let clone_s = clone.to_string_lossy();
    git(&["clone", "--quiet", &w.remote, &clone_s]);
    std::fs::write(clone.join(file), format!("{content}\n")).unwrap();
    git(&["-C", &clone_s, "add", "."]);
    git(&[
        "-C",
        &clone_s,
        "commit",
        "--quiet",
        "-m",
        "A person's change",
    ]);
    git(&["-C", &clone_s, "push", "--quiet", "origin", "main"]);
    remote_head(&w.remote).unwrap()
}

/// Runs a gated build writing `file` while a person pushes `theirs`; returns the task,
/// its one callback, the person's commit and the task id.
async fn build_while_someone_pushes(
    w: &World,
    file: &str,
    theirs: (&str, &str),
) -> (Value, Value, String, String) {
    let id = build(
        w,
        json!({"prompt": gated_prompt(file, "mine"), "auto_deploy": true,
               "callback_url": w.receiver.url()}),
    )
    .await;
    let worktree = gated_worktree(w, &id).await;
    let person = someone_pushes(w, theirs.0, theirs.1);
    std::fs::write(worktree.join(".go"), "").unwrap();
    let t = delivered_within(w, &id, Duration::from_secs(120)).await;
    let callbacks: Vec<Value> = w
        .receiver
        .accepted()
        .into_iter()
        .map(|c| c.json())
        .filter(|c| c["task_id"] == id.as_str())
        .collect();
    assert_eq!(callbacks.len(), 1, "one callback: {callbacks:?}");
    // One conversation: a second run would ask for the first step again.
    let first_steps = w
        .model
        .requests()
        .iter()
        .filter(|r| r.step == Some(0))
        .count();
    assert_eq!(first_steps, 1, "the agent ran once");
    let callback = callbacks.into_iter().next().unwrap();
    (t, callback, person, id)
}

async fn a_commit_pushed_meanwhile_is_rebased_onto_without_running_the_agent_again(pg: bool) {
    let w = world(pg).await;
    seeded_project(&w).await;
    let (t, cb, person, id) =
        build_while_someone_pushes(&w, "page.html", ("other.txt", "theirs")).await;
    assert_eq!(cb["status"], "completed", "{cb}");
    assert_eq!(t["attempt"], 1, "{t}");
    let head = remote_head(&w.remote).unwrap();
    assert_eq!(cb["result"]["artifacts"]["commit_sha"], head.as_str());
    assert_eq!(
        git(&["--git-dir", &w.remote, "rev-parse", &format!("{head}^")]),
        person,
        "rdev's commit sits on the person's"
    );
    let show = |path: &str| git(&["--git-dir", &w.remote, "show", &format!("main:{path}")]);
    assert_eq!(show("page.html"), "mine");
    assert_eq!(show("other.txt"), "theirs");
    let message = git(&["--git-dir", &w.remote, "log", "-1", "--format=%B", "main"]);
    assert!(message.contains(&format!("Rdev-Task: {id}")), "{message}");
    let events = w
        .app
        .client()
        .get_text(&format!("/tasks/{id}/events"))
        .await;
    assert!(events.contains("\"step\":\"rebase\""), "{events}");
}

#[tokio::test]
async fn a_commit_pushed_meanwhile_is_rebased_onto_on_sqlite() {
    a_commit_pushed_meanwhile_is_rebased_onto_without_running_the_agent_again(false).await;
}

#[tokio::test]
async fn a_commit_pushed_meanwhile_is_rebased_onto_on_postgres() {
    a_commit_pushed_meanwhile_is_rebased_onto_without_running_the_agent_again(true).await;
}

async fn a_conflicting_commit_ends_the_task_push_conflict_with_the_work_on_its_branch(pg: bool) {
    let w = world(pg).await;
    seeded_project(&w).await;
    let (t, cb, person, id) =
        build_while_someone_pushes(&w, "README.md", ("README.md", "theirs")).await;
    assert_eq!(cb["status"], "failed", "{cb}");
    let branch = format!("rdev/{id}");
    let error = cb["error"].as_str().unwrap();
    assert!(error.starts_with("push_conflict: "), "{error}");
    assert!(
        error.contains(&branch),
        "the error names the branch: {error}"
    );
    assert!(
        error.contains("README.md"),
        "and the conflicting path: {error}"
    );
    assert_eq!(t["error"], cb["error"]);
    assert_eq!(t["attempt"], 1, "not retried: {t}");
    let kept = git(&[
        "--git-dir",
        &w.remote,
        "rev-parse",
        &format!("refs/heads/{branch}"),
    ]);
    assert_eq!(
        cb["result"]["artifacts"],
        json!({"commit_sha": kept, "deploy_url": null, "branch": branch}),
        "{cb}"
    );
    assert_eq!(
        git(&[
            "--git-dir",
            &w.remote,
            "show",
            &format!("{branch}:README.md")
        ]),
        "mine"
    );
    assert_eq!(
        remote_head(&w.remote).as_deref(),
        Some(person.as_str()),
        "main is the person's, untouched by rdev"
    );
}

#[tokio::test]
async fn a_conflicting_commit_ends_push_conflict_on_sqlite() {
    a_conflicting_commit_ends_the_task_push_conflict_with_the_work_on_its_branch(false).await;
}

#[tokio::test]
async fn a_conflicting_commit_ends_push_conflict_on_postgres() {
    a_conflicting_commit_ends_the_task_push_conflict_with_the_work_on_its_branch(true).await;
}
