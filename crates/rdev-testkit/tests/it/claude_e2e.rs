//! End to end with the real `claude` CLI (installed by `scripts/setup-tools`) against the
//! scripted model: a Write + Bash + reply script, `--resume` of the same session, and an
//! API error that ends in an error result. Needs no network: every request goes to the
//! loopback scripted model and the env flags below switch off Claude Code's other traffic.

use std::{
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::{Duration, Instant},
};

use rdev_testkit::{claude_bin, ScriptedModel};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    process::Command,
};

use crate::common::GroupGuard;

/// Safety net against a hung CLI; a normal run takes about a second.
const DEADLINE: Duration = Duration::from_secs(120);

/// A private HOME / CLAUDE_CONFIG_DIR and a working directory, removed on drop.
struct Sandbox {
    _dir: tempfile::TempDir,
    home: PathBuf,
    work: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        Self {
            _dir: dir,
            home,
            work,
        }
    }
}

struct ClaudeRun {
    events: Vec<Value>,
    stderr: String,
    status: ExitStatus,
    elapsed: Duration,
}

impl ClaudeRun {
    fn of_type<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.events.iter().filter(move |e| e["type"] == kind)
    }

    fn result(&self) -> &Value {
        self.of_type("result")
            .last()
            .unwrap_or_else(|| panic!("no result event; stderr: {}", self.stderr))
    }
}

/// Env that keeps Claude Code offline and quiet; see docs/scripted-model.md for each flag.
fn offline_env(model: &ScriptedModel, sandbox: &Sandbox) -> Vec<(&'static str, String)> {
    vec![
        (
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
        ),
        ("SHELL", "/bin/bash".into()),
        ("LANG", "C.UTF-8".into()),
        ("HOME", sandbox.home.display().to_string()),
        (
            "CLAUDE_CONFIG_DIR",
            sandbox.home.join(".claude").display().to_string(),
        ),
        ("ANTHROPIC_BASE_URL", model.base_url()),
        ("ANTHROPIC_API_KEY", "test-key".into()),
        ("IS_SANDBOX", "1".into()),
        ("DISABLE_AUTOUPDATER", "1".into()),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".into()),
        ("DISABLE_TELEMETRY", "1".into()),
        ("DISABLE_ERROR_REPORTING", "1".into()),
    ]
}

async fn run_claude(
    model: &ScriptedModel,
    sandbox: &Sandbox,
    prompt: &str,
    extra_args: &[&str],
    extra_env: &[(&'static str, &str)],
) -> ClaudeRun {
    let started = Instant::now();
    let mut cmd = Command::new(claude_bin());
    cmd.args([
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--dangerously-skip-permissions",
    ])
    .args(extra_args)
    .current_dir(&sandbox.work)
    .env_clear()
    .envs(offline_env(model, sandbox))
    .envs(extra_env.iter().map(|(k, v)| (*k, *v)))
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0)
    .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn claude");
    let _guard = GroupGuard(child.id());

    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(prompt.as_bytes()).await.unwrap();
    drop(stdin);
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr_pipe = child.stderr.take().unwrap();

    let run = async {
        let mut events = Vec::new();
        let mut stderr = String::new();
        let read_err = stderr_pipe.read_to_string(&mut stderr);
        let read_out = async {
            while let Some(line) = stdout.next_line().await.unwrap() {
                let event: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
                events.push(event);
            }
        };
        let (_, read) = tokio::join!(read_out, read_err);
        read.unwrap();
        let status = child.wait().await.unwrap();
        (events, stderr, status)
    };
    let (events, stderr, status) = tokio::time::timeout(DEADLINE, run)
        .await
        .unwrap_or_else(|_| panic!("claude did not finish within {DEADLINE:?}"));
    ClaudeRun {
        events,
        stderr,
        status,
        elapsed: started.elapsed(),
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test]
async fn claude_writes_a_file_runs_bash_and_replies() {
    let model = ScriptedModel::start().await.unwrap();
    let sandbox = Sandbox::new();
    let prompt = "Create the greeting files.\n\
                  @@write greeting.txt\nhello from the scripted model\nsecond line\n@@end\n\
                  @@bash echo made-by-bash > from_bash.txt\n\
                  @@reply Both files are in place.\n";
    let run = run_claude(&model, &sandbox, prompt, &[], &[]).await;
    eprintln!("claude write+bash+reply run took {:?}", run.elapsed);

    assert!(
        run.status.success(),
        "claude failed: {}\n{:?}",
        run.stderr,
        run.events
    );
    assert_eq!(
        read(&sandbox.work.join("greeting.txt")),
        "hello from the scripted model\nsecond line\n"
    );
    assert_eq!(read(&sandbox.work.join("from_bash.txt")), "made-by-bash\n");

    let init = run
        .of_type("system")
        .find(|e| e["subtype"] == "init")
        .expect("system/init event");
    let cwd = std::fs::canonicalize(&sandbox.work).unwrap();
    assert_eq!(init["cwd"].as_str().map(PathBuf::from), Some(cwd));
    let tool_names: Vec<&str> = run
        .of_type("assistant")
        .flat_map(|e| e["message"]["content"].as_array().unwrap())
        .filter(|b| b["type"] == "tool_use")
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(tool_names, ["Write", "Bash"]);
    let result = run.result();
    assert_eq!(result["subtype"], "success");
    assert_eq!(result["is_error"], false);
    assert_eq!(result["result"], "Both files are in place.");
    assert_eq!(result["num_turns"], 3);
    assert_eq!(result["session_id"], init["session_id"]);
    assert!(result["usage"]["input_tokens"].as_u64().unwrap() > 0);

    let steps: Vec<usize> = model
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/messages" && !r.side)
        .filter_map(|r| r.step)
        .collect();
    assert_eq!(steps, [0, 1, 2], "requests: {:#?}", model.requests());
}

#[tokio::test]
async fn claude_resume_serves_the_new_prompt_from_its_first_step() {
    let model = ScriptedModel::start().await.unwrap();
    let sandbox = Sandbox::new();
    let first = run_claude(
        &model,
        &sandbox,
        "@@write one.txt\nfirst\n@@end\n@@reply first done",
        &[],
        &[],
    )
    .await;
    assert!(first.status.success(), "{}", first.stderr);
    let session = first.result()["session_id"].as_str().unwrap().to_owned();

    let second = run_claude(
        &model,
        &sandbox,
        "@@bash cat one.txt > two.txt\n@@reply second done",
        &["--resume", &session],
        &[],
    )
    .await;
    assert!(second.status.success(), "{}", second.stderr);
    assert_eq!(second.result()["result"], "second done");
    assert_eq!(second.result()["session_id"], session.as_str());
    assert_eq!(read(&sandbox.work.join("two.txt")), "first\n");
}

#[tokio::test]
async fn claude_api_error_ends_in_an_error_result() {
    let model = ScriptedModel::start().await.unwrap();
    let sandbox = Sandbox::new();
    // CLAUDE_CODE_MAX_RETRIES=0: without it Claude Code retries a 500 ten times with backoff.
    let run = run_claude(
        &model,
        &sandbox,
        "Try this.\n@@error 500 scripted upstream failure\n",
        &[],
        &[("CLAUDE_CODE_MAX_RETRIES", "0")],
    )
    .await;
    eprintln!("claude error run took {:?}", run.elapsed);

    assert!(!run.status.success());
    let result = run.result();
    assert_eq!(result["is_error"], true);
    assert_eq!(result["api_error_status"], 500);
    let message = result["result"].as_str().unwrap();
    assert!(message.contains("scripted upstream failure"), "{message}");
    let messages: Vec<_> = model
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/messages")
        .collect();
    assert!(!messages.is_empty());
    assert!(messages.iter().all(|r| r.status == 500), "{messages:#?}");
}
