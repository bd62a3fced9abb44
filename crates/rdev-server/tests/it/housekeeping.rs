//! Nothing grows without bound: a finished build leaves no checkout and no agent config
//! dir behind, a failed one keeps both for debugging until the sweep finds them older than
//! `keep_failed_workspaces_hours`, leftovers of crashed runs (and the socket dirs of killed
//! gateways) are swept at start-up, and
//! `/metrics` reports the data directory's size. Real `claude` CLI against the scripted
//! model; time is passed to the sweep rather than waited for.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use rdev_agents::claude_code::ClaudeCodeConfig;
use rdev_server::{git::GitWorkspaces, housekeeping::sweep_kept, Config};
use rdev_testkit::{claude_bin, claude_env, git::git, ScriptedModel, TEST_API_KEY};
use serde_json::json;

use crate::common::{spawn_app_configured, start_build, wait_for_task, TestApp};

const DAY: Duration = Duration::from_secs(24 * 3600);

/// The names in `dir`, sorted (none when it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Polls `check` until it holds, failing with `what` after 30 s.
async fn wait_until(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The Claude Code settings of these tests: config dirs under `state`.
fn claude(state: &Path) -> ClaudeCodeConfig {
    ClaudeCodeConfig {
        config_root: Some(state.to_path_buf()),
        ..ClaudeCodeConfig::default()
    }
}

struct World {
    app: TestApp,
    git_root: PathBuf,
    state: PathBuf,
    _model: ScriptedModel,
    _dir: tempfile::TempDir,
}

/// rdev with one worker running the real `claude` against the scripted model, a project
/// `site` on an empty bare remote, and `plant` run on the data directory before start.
async fn world(workers: u32, plant: impl FnOnce(&Path, &ClaudeCodeConfig)) -> World {
    let dir = tempfile::tempdir().unwrap();
    let remote = dir.path().join("site.git").to_string_lossy().into_owned();
    git(&["init", "--bare", "--quiet", "-b", "main", &remote]);
    let model = ScriptedModel::start().await.unwrap();
    let state = dir.path().join("claude-state");
    let base = model.base_url();
    let mut data_dir = PathBuf::new();
    let app = spawn_app_configured(None, |c: &mut Config| {
        c.worker_concurrency = workers;
        data_dir = c.data_dir.clone();
        let mut cc = claude(&state);
        cc.bin = Some(claude_bin());
        cc.env = claude_env(&base, TEST_API_KEY);
        plant(&c.data_dir, &cc);
        c.agents.claude_code = cc;
    })
    .await;
    let r = reqwest::Client::new()
        .post(format!("{}/projects", app.address))
        .json(&json!({"name": "site", "repo_url": remote}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    World {
        app,
        git_root: data_dir.join("git"),
        state,
        _model: model,
        _dir: dir,
    }
}

/// Runs a build of `prompt` to a final status and returns the task.
async fn run_build(w: &World, prompt: &str) -> serde_json::Value {
    let c = reqwest::Client::new();
    let id = start_build(&c, &w.app.address, "site", json!({"prompt": prompt})).await;
    wait_for_task(&c, &w.app.address, &id, Duration::from_secs(120), |t| {
        matches!(t["status"].as_str(), Some("completed" | "failed"))
    })
    .await
}

#[tokio::test]
async fn a_finished_build_leaves_nothing_and_a_failed_one_is_kept_until_the_sweep() {
    let w = world(1, |_, _| {}).await;
    let (work, gitdirs, kept) = (
        w.git_root.join("work"),
        w.git_root.join("gitdirs"),
        w.git_root.join("kept"),
    );

    let done = run_build(&w, "@@write a.txt\nhello\n@@end\n@@reply ok").await;
    assert_eq!(done["status"], "completed", "{done}");
    wait_until(
        "the finished build's checkout and config dir are removed",
        || {
            entries(&work).is_empty()
                && entries(&gitdirs).is_empty()
                && entries(&w.state).is_empty()
        },
    )
    .await;

    let failed = run_build(&w, "@@write b.txt\nhalf done\n@@end\n@@error 400 no more").await;
    assert_eq!(failed["status"], "failed", "{failed}");
    // Kept as the run left it: the worktree with the agent's file, its git dir, and the
    // agent's config dir with the session transcript.
    let names = entries(&work);
    assert_eq!(names.len(), 1, "{names:?}");
    let tree = work.join(&names[0]);
    assert_eq!(
        std::fs::read_to_string(tree.join("b.txt")).unwrap(),
        "half done\n"
    );
    assert_eq!(entries(&gitdirs), names);
    assert_eq!(entries(&kept), names);
    let config_dir = claude(&w.state).config_dir(&tree).unwrap();
    assert_eq!(
        entries(&w.state),
        [config_dir.file_name().unwrap().to_string_lossy()]
    );
    assert!(!entries(&config_dir).is_empty(), "the transcript is kept");

    // The sweep leaves it while it is younger than the setting and removes it after.
    let git = GitWorkspaces::new(&w.git_root);
    let now = SystemTime::now();
    assert!(sweep_kept(&git, now, DAY).await.is_empty());
    assert!(tree.is_dir());
    let removed = sweep_kept(&git, now + DAY + Duration::from_secs(60), DAY).await;
    assert_eq!(removed, names);
    for dir in [&work, &gitdirs, &kept, &w.state] {
        assert!(
            entries(dir).is_empty(),
            "{}: {:?}",
            dir.display(),
            entries(dir)
        );
    }
}

#[tokio::test]
async fn start_up_sweeps_crashed_runs_and_metrics_report_the_data_dir_size() {
    let kept_state = std::sync::Mutex::new(None);
    let w = world(0, |data, claude| {
        let git = data.join("git");
        let plant_tree = |name: &str| {
            let tree = git.join("work").join(name);
            std::fs::create_dir_all(tree.join("node_modules/x")).unwrap();
            std::fs::create_dir_all(git.join("gitdirs").join(name).join("objects")).unwrap();
            let state = claude.config_dir(&tree).unwrap();
            std::fs::create_dir_all(state.join("projects")).unwrap();
            (tree, state)
        };
        // A run that crashed mid-way.
        plant_tree("site-crashed");
        // An earlier rdev removed the worktree and git dir but not the config dir.
        let (gone, _) = plant_tree("site-gone");
        std::fs::remove_dir_all(&gone).unwrap();
        std::fs::remove_dir_all(git.join("gitdirs/site-gone")).unwrap();
        // A failed run kept for debugging: stays until it is old enough.
        let (_, state) = plant_tree("site-kept");
        std::fs::create_dir_all(git.join("kept")).unwrap();
        std::fs::write(git.join("kept/site-kept"), format!("{}\n", state.display())).unwrap();
        *kept_state.lock().unwrap() = Some(state);
    })
    .await;
    let kept_state = kept_state.lock().unwrap().take().unwrap();

    wait_until("leftovers of crashed runs are swept at start-up", || {
        entries(&w.git_root.join("work")) == ["site-kept"]
            && entries(&w.git_root.join("gitdirs")) == ["site-kept"]
            && entries(&w.state) == [kept_state.file_name().unwrap().to_string_lossy()]
    })
    .await;
    assert!(kept_state.join("projects").is_dir());

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = reqwest::get(format!("{}/metrics", w.app.address))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let bytes = metrics
            .lines()
            .find_map(|l| l.strip_prefix("rdev_data_dir_bytes "))
            .map(|v| v.trim().parse::<u64>().unwrap());
        match bytes {
            Some(b) if b > 0 => break,
            _ => assert!(
                tokio::time::Instant::now() < deadline,
                "no data dir size: {metrics}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A killed rdev's gateway left its socket dir in the temporary directory: the next
/// start-up removes it, and leaves a directory a running gateway holds.
#[tokio::test]
async fn start_up_sweeps_the_socket_dirs_of_killed_gateways_but_not_live_ones() {
    use rdev_server::gateway::socket_dir::{SocketDir, PREFIX, SOCKET};
    let tmp = std::env::temp_dir();
    let killed = tmp.join(format!("{PREFIX}killed-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir(&killed).unwrap();
    std::fs::write(killed.join(".lock"), "").unwrap();
    drop(std::os::unix::net::UnixListener::bind(killed.join(SOCKET)).unwrap());
    // Another rdev's, running (this process holds its lock and listens on its socket).
    let live = SocketDir::new_in(&tmp).unwrap();
    let _listening = std::os::unix::net::UnixListener::bind(live.socket()).unwrap();

    let _app = spawn_app_configured(None, |_| {}).await;
    wait_until(
        "the killed gateway's socket dir is swept at start-up",
        || !killed.exists(),
    )
    .await;
    assert!(live.socket().exists(), "a live gateway's dir stays");
}
