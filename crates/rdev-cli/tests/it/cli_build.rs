//! The README's "Build something" against `rdev serve` started the way `scripts/serve` starts
//! it (a fresh working directory, default paths, `RDEV_CLAUDE_BIN` set), and the `rdev build`
//! and `rdev task` commands against such a server. The real `claude` CLI runs against the
//! scripted model, so nothing leaves loopback.

use std::{
    path::Path,
    process::{Command, Output},
    time::Duration,
};

use rdev_testkit::{
    agent_env::env_toml,
    claude_bin, claude_env,
    git::{git, remote_head},
    CallbackReceiver, ScriptedModel, TEST_API_KEY,
};
use serde_json::{json, Value};

use crate::common::{serve_with_env, Server, RDEV};

/// `rdev serve` in `dir` with the default configuration, except that the agents are narrowed
/// to Claude Code (the default list also starts `opencode serve`, which would use the real
/// HOME) and Claude Code talks to the scripted model. Like `scripts/serve`, the CLI comes
/// from `RDEV_CLAUDE_BIN`; its state directory is kept inside `dir`.
fn serve_scripted(dir: &Path, model: &ScriptedModel) -> Server {
    std::fs::write(
        dir.join("rdev.toml"),
        format!(
            r#"allow_private_callbacks = true

[agents]
enabled = ["claude-code"]

[agents.claude_code.env]
{}"#,
            env_toml(&claude_env(&model.base_url(), TEST_API_KEY))
        ),
    )
    .unwrap();
    let bin = claude_bin();
    let state = dir.join("state");
    serve_with_env(
        dir,
        None,
        &[
            ("RDEV_CLAUDE_BIN", bin.as_os_str()),
            ("XDG_STATE_HOME", state.as_os_str()),
        ],
    )
}

/// The README's `POST /projects` body.
fn readme_project() -> Value {
    json!({"name": "acme", "template": "astro-landing", "variables": {"title": "Acme Rockets"},
           "deploy_url_pattern": "https://{project}.example.com"})
}

#[tokio::test(flavor = "multi_thread")]
async fn readme_build_something_works_on_a_fresh_directory_with_default_paths() {
    let dir = tempfile::tempdir().unwrap();
    let model = ScriptedModel::start().await.unwrap();
    let receiver = CallbackReceiver::start().await.unwrap();
    let server = serve_scripted(dir.path(), &model);
    let cwd = dir.path().canonicalize().unwrap();
    let bare = cwd.join("data/repos/acme.git");

    let paths = server.logged("paths");
    assert_eq!(paths.len(), 1, "paths are logged once");
    assert_eq!(paths[0]["data_dir"], cwd.join("data").to_str().unwrap());
    assert_eq!(
        paths[0]["database"],
        format!("sqlite:{}", cwd.join("rdev.db").display())
    );

    let c = reqwest::Client::new();
    let r = c
        .post(format!("{}/projects", server.url))
        .json(&readme_project())
        .send()
        .await
        .unwrap();
    let status = r.status();
    let project: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{project}");
    assert_eq!(project["repo_url"], bare.to_str().unwrap(), "{project}");
    assert!(project["webhook_secret"].is_string());

    // The README's body; the callback goes to a local receiver instead of bot.example.com,
    // and the prompt carries the scripted model's directives after the README's sentence.
    let prompt = "Add a pricing section with three tiers\n\
                  @@write src/pages/pricing.html\n<h2>Pricing</h2>\n@@end\n\
                  @@reply Added the pricing section.";
    let r = c
        .post(format!("{}/project/acme/build", server.url))
        .header("Idempotency-Key", "bot-msg-4711")
        .json(&json!({"prompt": prompt, "auto_deploy": true, "callback_url": receiver.url()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let queued: Value = r.json().await.unwrap();
    assert_eq!(queued["status"], "queued", "{queued}");

    let got = receiver
        .wait_for_accepted(1, Duration::from_secs(180))
        .await;
    assert_eq!(got.len(), 1, "one callback arrived");
    let body = got[0].json();
    assert_eq!(body["task_id"], queued["task_id"]);
    assert_eq!(body["status"], "completed", "{body}");
    let head = remote_head(bare.to_str().unwrap()).expect("the build pushed");
    assert_eq!(body["result"]["artifacts"]["commit_sha"], head.as_str());
    assert_eq!(
        body["result"]["artifacts"]["deploy_url"],
        "https://acme.example.com"
    );
    assert_eq!(
        git(&[
            "--git-dir",
            bare.to_str().unwrap(),
            "show",
            "main:src/pages/pricing.html"
        ]),
        "<h2>Pricing</h2>"
    );
}

/// Runs the `rdev` CLI against `server`.
fn rdev(server: &Server, args: &[&str]) -> Output {
    Command::new(RDEV)
        .args(args)
        .env("RDEV_SERVER", &server.url)
        .env_remove("RDEV_API_TOKEN")
        .output()
        .expect("rdev runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Whether `line` is `<prefix> <seconds>s...`, a step line with its duration.
fn timed(line: &str, prefix: &str) -> bool {
    line.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix(' '))
        .and_then(|rest| rest.split(['s', ' ']).next())
        .is_some_and(|secs| secs.parse::<f64>().is_ok())
}

/// What a log line should be: a name for the failure message and a test.
type LineCheck = (&'static str, fn(&str) -> bool);

/// A scripted server in its own directory, holding the README's project.
struct World {
    dir: tempfile::TempDir,
    server: Server,
    _model: ScriptedModel,
}

impl World {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let model = ScriptedModel::start().await.unwrap();
        let server = serve_scripted(dir.path(), &model);
        let r = reqwest::Client::new()
            .post(format!("{}/projects", server.url))
            .json(&readme_project())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        Self {
            dir,
            server,
            _model: model,
        }
    }

    /// Runs the `rdev` CLI against the server without blocking the runtime's other tasks.
    fn rdev(&self, args: &[&str]) -> Output {
        tokio::task::block_in_place(|| rdev(&self.server, args))
    }
}

/// Stdout as JSON lines, each required to parse.
fn json_lines(out: &Output) -> Vec<Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn build_follow_prints_a_ci_log_and_task_commands_show_the_task() {
    let w = World::start().await;
    let prompt = "@@write hello.html\n<h1>Hello</h1>\n@@end\n@@bash echo built > build.txt\n\
                  @@reply The page is ready.";
    let out = w.rdev(&[
        "build",
        "acme",
        "--prompt",
        prompt,
        "--auto-deploy",
        "--follow",
    ]);
    let log = stdout(&out);
    assert!(out.status.success(), "{log}{}", stderr(&out));
    let lines: Vec<&str> = log.lines().collect();
    let bare = w.dir.path().join("data/repos/acme.git");
    let head = remote_head(bare.to_str().unwrap()).expect("the build pushed");
    let expect: [LineCheck; 8] = [
        ("prepare", |l| timed(l, "prepare")),
        ("agent header", |l| l == "agent claude-code"),
        ("write", |l| l == "  Write hello.html"),
        ("bash", |l| l == "  Bash echo built > build.txt"),
        ("agent end", |l| timed(l, "agent success")),
        ("push", |l| l.starts_with("push ")),
        ("status", |l| timed(l, "completed")),
        ("result", |l| l == "The page is ready."),
    ];
    let mut at = 0;
    for (what, matches) in expect {
        let Some(i) = lines[at..].iter().position(|l| matches(l)) else {
            panic!("no {what} line after line {at} in:\n{log}");
        };
        at += i + 1;
    }
    assert!(log.contains(&format!("\npush {} ", &head[..7])), "{log}");
    assert!(log.contains(&format!("\ncommit {head}\n")), "{log}");
    let id = stderr(&out)
        .lines()
        .find_map(|l| l.strip_prefix("task ")?.strip_suffix(" queued"))
        .expect("the task id on stderr")
        .to_owned();

    // `rdev task`: list, show, and logs replayed as the same CI log or as JSON lines.
    let out = w.rdev(&["task", "list", "--project", "acme"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list = stdout(&out);
    assert!(
        list.lines()
            .any(|l| l.starts_with(&id) && l.contains("completed")),
        "{list}"
    );
    let out = w.rdev(&["task", "show", &id]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["status"], "completed");
    assert_eq!(shown["result"]["artifacts"]["commit_sha"], head.as_str());

    let out = w.rdev(&["task", "logs", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), log, "a replay prints the same log");

    let out = w.rdev(&["task", "logs", &id, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let events = json_lines(&out);
    assert_eq!(events.last().unwrap()["event"], "end");
    assert!(events
        .iter()
        .any(|e| e["event"] == "tool_use" && e["data"]["payload"]["name"] == "Write"));
    assert!(events
        .iter()
        .any(|e| e["event"] == "progress" && e["data"]["payload"]["step"] == "push"));
}

#[tokio::test(flavor = "multi_thread")]
async fn build_json_failures_and_cancel_report_the_task_outcome() {
    let w = World::start().await;

    // --follow --json: the event stream as JSON lines, exit 1 for a failed task.
    let fail = "@@error 400 no such model";
    let out = w.rdev(&["build", "acme", "--prompt", fail, "--follow", "--json"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(" failed: "), "{err}");
    assert_eq!(
        err.lines()
            .filter(|l| l.starts_with("rdev: error:"))
            .count(),
        1,
        "{err}"
    );
    let events = json_lines(&out);
    assert_eq!(events.last().unwrap()["event"], "end");
    assert_eq!(events.last().unwrap()["data"]["status"], "failed");

    // Without --follow: the server's answer with --json (the id alone without); a cancel.
    let slow = "@@sleep 60000\n@@reply late";
    let out = w.rdev(&["build", "acme", "--prompt", slow, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["status"], "queued");
    let id = answer["task_id"].as_str().unwrap();
    let out = w.rdev(&["task", "cancel", id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), format!("task {id} is cancelled"));
    let out = w.rdev(&["task", "logs", id, "--follow"]);
    assert!(!out.status.success());
    let log = stdout(&out);
    assert!(log.lines().any(|l| l.starts_with("cancelled")), "{log}");
    assert!(stderr(&out).contains(&format!("task {id} cancelled")));
}
