//! `rdev agent run` end to end: the real `rdev` binary runs the real `claude` CLI against
//! the scripted model. Checks exit codes, the one-line failure reason, JSON event lines,
//! and that an API key the agent echoes never reaches rdev's output.

use std::{path::Path, process::Output};

use rdev_testkit::{claude_bin, claude_env, ScriptedModel};

const API_KEY: &str = "sk-cli-test-key-0123456789";

async fn rdev(model: &ScriptedModel, state: &Path, args: &[&str]) -> Output {
    let home = state.join("home");
    std::fs::create_dir_all(&home).unwrap();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_rdev"))
        .args(args)
        .current_dir(state)
        .envs(
            claude_env(&model.base_url(), API_KEY)
                .iter()
                .map(|(k, v)| (k, v.expose())),
        )
        .env("RDEV_CLAUDE_BIN", claude_bin())
        .env(
            "RDEV_AGENTS__CLAUDE_CODE__CONFIG_ROOT",
            state.join("claude-config"),
        )
        .env_remove("RDEV_CONFIG")
        // A clean HOME keeps the machine's login profile out of the Bash tool's shells.
        .env("HOME", home)
        .output()
        .await
        .expect("run rdev")
}

#[tokio::test]
async fn agent_run_prints_json_events_exits_zero_and_never_echoes_the_api_key() {
    let model = ScriptedModel::start().await.unwrap();
    let (state, work) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let workdir = work.path().to_str().unwrap();
    let prompt = "@@write out.txt\ncli was here\n@@end\n@@bash echo key=$ANTHROPIC_API_KEY\n@@reply done via cli";
    let out = rdev(
        &model,
        state.path(),
        &[
            "agent",
            "run",
            "--provider",
            "claude-code",
            "--workdir",
            workdir,
            "--json",
            prompt,
        ],
    )
    .await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(
        std::fs::read_to_string(work.path().join("out.txt")).unwrap(),
        "cli was here\n"
    );
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types.first(), Some(&"started"));
    assert_eq!(types.last(), Some(&"completed"));
    assert_eq!(events.last().unwrap()["status"], "success");
    assert_eq!(events.last().unwrap()["output"], "done via cli");
    assert!(
        events.iter().any(|e| e["type"] == "tool_result"
            && e["output"]
                .as_str()
                .is_some_and(|o| o.contains("key=[redacted]"))),
        "{stdout}"
    );
    assert!(
        !stdout.contains(API_KEY) && !stderr.contains(API_KEY),
        "the key leaked"
    );
}

/// Checks that `rdev` failed with exactly one line on stderr starting with `prefix`, and
/// returns that stderr.
fn assert_one_line_failure(out: &Output, prefix: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with(prefix), "{stderr}");
    stderr
}

#[tokio::test]
async fn agent_run_failure_is_one_line_on_stderr_and_a_nonzero_exit() {
    let model = ScriptedModel::start().await.unwrap();
    let (state, work) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let workdir = work.path().to_str().unwrap();
    let out = rdev(
        &model,
        state.path(),
        &[
            "agent",
            "run",
            "--workdir",
            workdir,
            "@@error 500 scripted meltdown",
        ],
    )
    .await;
    let stderr = assert_one_line_failure(&out, "rdev: error: agent run failed: ");
    assert!(stderr.contains("500"), "{stderr}");
    // Readable mode prints one line per event, ending with the completion.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("completed Failed")),
        "{stdout}"
    );

    let out = rdev(
        &model,
        state.path(),
        &[
            "agent",
            "run",
            "--provider",
            "nope",
            "--workdir",
            workdir,
            "hi",
        ],
    )
    .await;
    assert_one_line_failure(
        &out,
        "rdev: error: unknown provider \"nope\" (known: claude-code",
    );
}
