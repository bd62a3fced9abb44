//! The real `rdev` binary: `serve` starts, answers health checks, manages projects through
//! the CLI, and stops cleanly on SIGTERM; errors are one line with a non-zero exit.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::common::{serve as serve_in, Server, RDEV};

/// `rdev serve` in `dir` with no `--config`, so it reads `dir/rdev.toml`; that file only
/// narrows the agents to Claude Code, because the default list also starts a supervised
/// `opencode serve` that would use the real HOME and could reach the network, and gives it
/// a key (never used: no build runs), without which no provider is ready.
fn serve(dir: &Path) -> Server {
    std::fs::write(
        dir.join("rdev.toml"),
        "[agents]\nenabled = [\"claude-code\"]\n\
         [agents.claude_code.env]\nANTHROPIC_API_KEY = \"test-key-not-real\"\n",
    )
    .unwrap();
    serve_in(dir, None)
}

fn rdev(server: &Server, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(RDEV)
        .args(args)
        .env("RDEV_SERVER", &server.url)
        .output()
        .expect("rdev runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn serve_on_default_sqlite_answers_healthz_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(dir.path());
    let health: Value = reqwest::blocking::get(format!("{}/healthz", server.url))
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health["status"], "ok");
    let ready = reqwest::blocking::get(format!("{}/readyz", server.url)).unwrap();
    assert_eq!(ready.status(), 200);
    assert!(
        dir.path().join("rdev.db").exists(),
        "default database is ./rdev.db"
    );

    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "rdev did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
}

#[test]
fn project_commands_work_against_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path());
    let (ok, out, err) = rdev(
        &server,
        &[
            "project",
            "create",
            "site",
            "--repo-url",
            "/srv/git/site.git",
            "--max-parallel-builds",
            "2",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("\"name\": \"site\""), "{out}");
    assert!(out.contains("\"max_parallel_builds\": 2"), "{out}");
    let (ok, out, _) = rdev(&server, &["project", "list"]);
    assert!(ok);
    assert!(out.lines().any(|l| l.starts_with("site ")), "{out}");
    let (ok, out, _) = rdev(&server, &["project", "show", "site"]);
    assert!(ok);
    assert!(out.contains("/srv/git/site.git"));

    let (ok, out, err) = rdev(
        &server,
        &["project", "create", "Bad/Name", "--repo-url", "/x"],
    );
    assert!(!ok);
    assert!(out.is_empty());
    assert_eq!(err.trim().lines().count(), 1, "one-line error: {err}");
    assert!(err.contains("invalid_project_name (422)"), "{err}");

    let (ok, _, _) = rdev(&server, &["project", "rm", "site"]);
    assert!(ok);
    let (ok, _, err) = rdev(&server, &["project", "show", "site"]);
    assert!(!ok);
    assert!(err.contains("not_found (404)"), "{err}");
}

#[test]
fn unreachable_server_and_bad_config_are_one_line_errors() {
    let out = Command::new(RDEV)
        .args(["project", "list", "--server", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("could not reach the rdev server"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(RDEV)
        .args(["serve"])
        .current_dir(dir.path())
        .env("RDEV_LISTEN", "nonsense")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("invalid configuration"), "{err}");
}
