//! Orchestration overhead, measured end to end through the real server: for each of N
//! builds (default 200, `BENCH_BUILDS`), the time from `POST /project/{name}/build` to the
//! agent's start, and from the agent's exit to the callback's arrival at a real HTTP
//! receiver. The agent is an in-process one that returns at once, so everything measured
//! is rdev's own work (queue, claim, workspace from the warm mirror, event storage, task
//! completion with its outbox row, signing, delivery). Builds run one after another.
//!
//! Then workspace preparation on a repository with 5,000 commits, against a full clone
//! (`git clone --no-local file://...`, the pack protocol a remote clone uses), as ratios:
//! warm (`git ls-remote` finds the head unchanged and the spare checkout made in the
//! background is renamed into place) and cold (spares off: `git fetch` into the mirror
//! and `git clone --shared` on the task's critical path).
//!
//! Run: `cargo bench -p rdev-server --bench orchestration`. Prints JSON lines.

use std::{
    collections::HashMap,
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rdev_core::{
    AgentError, AgentEvent, AgentProvider, AgentRequest, AgentResult, AgentStatus, Capabilities,
    CodeAgent, EventSink, ProjectName, RunId, TaskId, Usage,
};
use rdev_server::{git::GitEnv, git::GitWorkspaces, Application, Config};
use rdev_testkit::CallbackReceiver;
use serde_json::json;

/// Start and exit instants of each run, by prompt.
type Marks = Arc<Mutex<HashMap<String, (Instant, Instant)>>>;

#[derive(Debug)]
struct InstantAgent(Marks);

#[async_trait::async_trait]
impl CodeAgent for InstantAgent {
    fn provider(&self) -> AgentProvider {
        AgentProvider::parse("bench-instant").unwrap()
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
    async fn execute(
        &self,
        req: AgentRequest,
        events: EventSink,
    ) -> Result<AgentResult, AgentError> {
        let start = Instant::now();
        let result = AgentResult {
            status: AgentStatus::Success,
            output: "done".into(),
            session_id: None,
            cost_usd: None,
            usage: Usage::default(),
            num_turns: 1,
            duration: Duration::ZERO,
        };
        let _ = events.send(AgentEvent::Completed(result.clone())).await;
        self.0
            .lock()
            .unwrap()
            .insert(req.prompt, (start, Instant::now()));
        Ok(result)
    }
    async fn cancel(&self, _run: RunId) -> Result<(), AgentError> {
        Ok(())
    }
}

fn git(dir: Option<&std::path::Path>, args: &[&str]) {
    let mut c = Command::new("git");
    if let Some(d) = dir {
        c.current_dir(d);
    }
    let out = c.args(args).output().expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A bare repository with `n` commits, made quickly with `git fast-import`.
fn repo_with_commits(root: &std::path::Path, n: usize) -> String {
    let bare = root.join("big.git");
    let bare_s = bare.to_string_lossy().into_owned();
    git(None, &["init", "--bare", "--quiet", "-b", "main", &bare_s]);
    let mut stream = String::new();
    for i in 1..=n {
        let content = format!("line {i}\n");
        stream.push_str(&format!(
            "commit refs/heads/main\nmark :{i}\ncommitter bench <bench@localhost> {} +0000\ndata {}\ncommit {i}\n",
            1_700_000_000 + i,
            format!("commit {i}").len()
        ));
        if i > 1 {
            stream.push_str(&format!("from :{}\n", i - 1));
        }
        stream.push_str(&format!(
            "M 644 inline file{}.txt\ndata {}\n{content}\n",
            i % 200,
            content.len()
        ));
    }
    let mut child = Command::new("git")
        .args(["--git-dir", &bare_s, "fast-import", "--quiet"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stream.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    git(None, &["--git-dir", &bare_s, "gc", "--quiet"]);
    bare_s
}

#[tokio::main]
async fn main() {
    let builds: usize = std::env::var("BENCH_BUILDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    let remote = dir.path().join("site.git").to_string_lossy().into_owned();
    let seed = dir.path().join("seed");
    git(
        None,
        &["init", "--quiet", "-b", "main", &seed.to_string_lossy()],
    );
    std::fs::write(seed.join("README.md"), "bench\n").unwrap();
    git(
        Some(&seed),
        &["-c", "user.name=b", "-c", "user.email=b@b", "add", "."],
    );
    git(
        Some(&seed),
        &[
            "-c",
            "user.name=b",
            "-c",
            "user.email=b@b",
            "commit",
            "-qm",
            "seed",
        ],
    );
    git(None, &["init", "--bare", "--quiet", "-b", "main", &remote]);
    git(Some(&seed), &["push", "-q", &remote, "main"]);

    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: format!("sqlite:{}", dir.path().join("rdev.db").display()),
        data_dir: dir.path().join("data"),
        worker_concurrency: 1,
        allow_private_callbacks: true,
        ..Config::default()
    };
    config.agents.enabled = Vec::new();
    let app = Application::build(config).await.unwrap();
    let marks: Marks = Arc::default();
    app.registry()
        .register(Arc::new(InstantAgent(Arc::clone(&marks))))
        .unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = app.shutdown_token();
    let server = tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/projects"))
        .json(&json!({"name": "site", "repo_url": remote}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let receiver = CallbackReceiver::start().await.unwrap();

    let (mut to_start, mut to_callback) = (Vec::new(), Vec::new());
    for i in 0..builds {
        let prompt = format!("bench build {i}");
        let t0 = Instant::now();
        let r = http
            .post(format!("{base}/project/site/build"))
            .json(&json!({"prompt": prompt, "provider": "bench-instant", "callback_url": receiver.url()}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let got = receiver
            .wait_for_accepted(i + 1, Duration::from_secs(30))
            .await;
        let arrived = Instant::now();
        assert_eq!(got.len(), i + 1, "callback {i} did not arrive");
        let (start, exit) = marks.lock().unwrap()[&prompt];
        to_start.push(ms(start - t0));
        to_callback.push(ms(arrived - exit));
    }
    stop.cancel();
    let _ = server.await;
    to_start.sort_by(f64::total_cmp);
    to_callback.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({"bench": "orchestration_overhead", "builds": builds,
            "post_to_agent_start_ms": {"p50": pct(&to_start, 0.5), "p99": pct(&to_start, 0.99)},
            "agent_exit_to_callback_ms": {"p50": pct(&to_callback, 0.5), "p99": pct(&to_callback, 0.99)},
            "goal_ms_p50": 50})
    );

    // Workspace preparation on a 5,000-commit repository. "warm" is the production path:
    // the spare made in the background after the previous task is ready (the bench waits
    // for it outside the timed part, as a task taking seconds would); "cold" turns spares
    // off, so every task fetches into the mirror and clones on its own critical path.
    let big = repo_with_commits(dir.path(), 5_000);
    let project = ProjectName::parse("big").unwrap();
    let env = GitEnv::default();
    let prep = |workspaces: GitWorkspaces| {
        let (big, project, env) = (big.clone(), project.clone(), env.clone());
        async move {
            let first = workspaces
                .prepare(&project, &big, "main", TaskId::new(), &env)
                .await
                .unwrap();
            workspaces.remove(first);
            let mut times = Vec::new();
            for _ in 0..20 {
                workspaces.settled().await;
                let t = Instant::now();
                let ws = workspaces
                    .prepare(&project, &big, "main", TaskId::new(), &env)
                    .await
                    .unwrap();
                times.push(ms(t.elapsed()));
                assert!(ws.dir.join("file0.txt").exists());
                workspaces.remove(ws);
            }
            times.sort_by(f64::total_cmp);
            times
        }
    };
    let warm = prep(GitWorkspaces::new(dir.path().join("ws-warm"))).await;
    let cold = prep(GitWorkspaces::new(dir.path().join("ws-cold")).with_spare_limit(0)).await;
    let mut full = Vec::new();
    for i in 0..10 {
        let target = dir.path().join(format!("clone{i}"));
        let t = Instant::now();
        git(
            None,
            &[
                "clone",
                "--quiet",
                "--no-local",
                &format!("file://{big}"),
                &target.to_string_lossy(),
            ],
        );
        full.push(ms(t.elapsed()));
        let _ = std::fs::remove_dir_all(&target);
    }
    full.sort_by(f64::total_cmp);
    let (w, c, f) = (pct(&warm, 0.5), pct(&cold, 0.5), pct(&full, 0.5));
    println!(
        "{}",
        json!({"bench": "workspace_prep", "commits": 5000,
            "warm_mirror_ms": {"p50": w, "p99": pct(&warm, 0.99)},
            "cold_no_spare_ms": {"p50": c, "p99": pct(&cold, 0.99)},
            "full_clone_ms": {"p50": f, "max": pct(&full, 1.0)},
            "speedup": f / w, "cold_speedup": f / c, "goal_speedup": 10})
    );
}
