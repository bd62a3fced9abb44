//! The real `rdev doctor`: one line per check with the fix and exit 0 when nothing is an
//! error, `--json` for scripts, `--offline` calling nothing; git missing from `PATH` and
//! missing model credentials are errors naming the fix; the README's environment variable
//! for the Anthropic key reaches `agents.claude_code.env` with its case intact; and
//! `rdev serve` logs one line per provider at start.

use std::{
    path::Path,
    process::{Command, Output},
};

use rdev_testkit::{claude_bin, ScriptedModel};
use serde_json::Value;

use crate::common::{serve, RDEV};

const KEY: &str = "cli-doctor-key-4321";

/// `rdev.toml` in `dir`: Claude Code only (the real CLI), pointed at `base_url`, with
/// `credentials` as extra lines of `[agents.claude_code.env]`. rdev's own environment
/// passes nothing on, so the developer's variables cannot change the outcome.
fn write_config(dir: &Path, base_url: &str, credentials: &str) {
    std::fs::write(
        dir.join("rdev.toml"),
        format!(
            r#"api_token = "doctor-admin-token"

[agents]
enabled = ["claude-code"]

[agents.claude_code]
bin = "{}"
inherit_env = ["PATH", "HOME"]

[agents.claude_code.env]
ANTHROPIC_BASE_URL = "{base_url}"
{credentials}
"#,
            claude_bin().display()
        ),
    )
    .unwrap();
}

/// `rdev doctor ARGS` in `dir` with `env` on top of a clean `RDEV_*`-free environment.
async fn doctor(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(RDEV);
    cmd.arg("doctor")
        .args(args)
        .current_dir(dir)
        .env_remove("RDEV_CONFIG")
        .env_remove("RDEV_DATABASE_URL")
        .env_remove("RDEV_CLAUDE_BIN")
        .env_remove("RDEV_MASTER_KEY")
        .env_remove("RDEV_MASTER_KEY_FILE")
        .envs(env.iter().copied());
    tokio::task::spawn_blocking(move || cmd.output().expect("rdev doctor runs"))
        .await
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The line of check `name`.
fn line<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find(|l| {
            l.split_once("  ")
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(&format!("{name}:")))
        })
        .unwrap_or_else(|| panic!("no {name} line in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_passes_a_complete_setup_in_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let model = ScriptedModel::start_with_api_key(KEY).await.unwrap();
    write_config(
        dir.path(),
        &model.base_url(),
        &format!("ANTHROPIC_API_KEY = \"{KEY}\""),
    );
    let out = doctor(dir.path(), &[], &[]).await;
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    for l in &lines[..lines.len() - 1] {
        assert!(
            ["ok ", "warning ", "error "]
                .iter()
                .any(|s| l.starts_with(s)),
            "{l}"
        );
    }
    assert!(
        line(&text, "claude-code endpoint").starts_with("ok "),
        "{text}"
    );
    assert!(line(&text, "git").starts_with("ok "), "{text}");
    assert!(
        text.lines().last().unwrap().starts_with("0 errors"),
        "{text}"
    );
    assert!(!text.contains(KEY), "{text}");
    assert_eq!(model.requests().len(), 1);

    let out = doctor(dir.path(), &["--json", "--offline"], &[]).await;
    assert!(out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["offline"], true);
    let checks = report["checks"].as_array().unwrap();
    assert!(checks
        .iter()
        .any(|c| c["check"] == "database" && c["status"] == "ok"));
    assert_eq!(model.requests().len(), 1, "--offline calls nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_fails_without_git_on_path_and_says_how_to_fix_it() {
    let dir = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "http://127.0.0.1:9",
        "ANTHROPIC_API_KEY = \"k\"",
    );
    let path = empty.path().to_str().unwrap();
    let out = doctor(dir.path(), &["--offline"], &[("PATH", path)]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let git = line(&text, "git");
    assert!(
        git.starts_with("error    git: git was not found on PATH; fix: install git 2.40"),
        "{git}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_without_credentials_names_the_setting_and_the_env_var_form_works() {
    let dir = tempfile::tempdir().unwrap();
    let model = ScriptedModel::start_with_api_key(KEY).await.unwrap();
    write_config(dir.path(), &model.base_url(), "");
    let out = doctor(dir.path(), &["--offline"], &[]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let creds = line(&text, "claude-code credentials");
    assert!(
        creds.starts_with("error ")
            && creds.contains("fix: for Anthropic's API set RDEV_AGENTS__CLAUDE_CODE__ENV__ANTHROPIC_API_KEY=<key>"),
        "{creds}"
    );

    // The README's line: the variable name keeps its case through the configuration.
    let out = doctor(
        dir.path(),
        &[],
        &[("RDEV_AGENTS__CLAUDE_CODE__ENV__ANTHROPIC_API_KEY", KEY)],
    )
    .await;
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    let creds = line(&text, "claude-code credentials");
    assert!(
        creds.contains("ANTHROPIC_API_KEY from agents.claude_code.env"),
        "{creds}"
    );
    assert!(
        line(&text, "claude-code endpoint").starts_with("ok "),
        "{text}"
    );
}

#[test]
fn serve_logs_one_line_per_provider_at_start() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "http://127.0.0.1:9", "");
    let server = serve(dir.path(), None);
    let logs = server.logs.lock().unwrap().clone();
    let lines: Vec<&Value> = logs
        .iter()
        .filter(|l| l["provider"] == "claude-code" && l["state"].is_string())
        .collect();
    assert_eq!(lines.len(), 1, "{logs:?}");
    assert_eq!(lines[0]["state"], "not_configured");
    let message = lines[0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("provider claude-code is not configured: ")
            && message.contains("RDEV_AGENTS__CLAUDE_CODE__ENV__ANTHROPIC_API_KEY"),
        "{message}"
    );
}
