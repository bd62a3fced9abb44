//! `rdev token` and the listening rule as a user meets them: the real binary creates,
//! lists and revokes tokens on the database a running `rdev serve` uses, the token works
//! (and stops working) against that server, and `rdev serve` refuses to listen on a public
//! address without any credential, or with an empty token, in one line.

use std::{
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use crate::common::{serve, RDEV};

/// `rdev token ARGS` on the SQLite database in `dir`.
fn token(dir: &Path, args: &[&str]) -> Output {
    let db = format!("sqlite:{}", dir.join("rdev.db").display());
    Command::new(RDEV)
        .current_dir(dir)
        .arg("token")
        .args(args)
        .args(["--database-url", &db])
        .env_remove("RDEV_CONFIG")
        .env_remove("RDEV_DATABASE_URL")
        .output()
        .expect("rdev runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts a failed run whose stderr is one line containing `needle`.
fn assert_one_line_error(o: &Output, needle: &str) {
    assert!(!o.status.success(), "expected failure: {}", stderr(o));
    let err = stderr(o);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "{err}");
}

fn request(method: reqwest::Method, url: String, token: Option<&str>, body: Option<Value>) -> u16 {
    let mut req = reqwest::blocking::Client::new().request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().unwrap().status().as_u16()
}

#[test]
fn a_build_token_from_the_cli_builds_its_project_only_until_revoked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // No worker (the build stays queued), and only Claude Code: the default list also
    // starts a supervised `opencode serve`. A key, since a provider without model
    // credentials refuses builds; no model is ever called.
    std::fs::write(
        dir.join("rdev.toml"),
        "worker_concurrency = 0\n[agents]\nenabled = [\"claude-code\"]\n\
         [agents.claude_code.env]\nANTHROPIC_API_KEY = \"test-key-not-real\"\n",
    )
    .unwrap();
    let server = serve(dir, None);
    let post = reqwest::Method::POST;
    // No credential yet on loopback: open, so the first project needs no token.
    let project = json!({"name": "site", "repo_url": "/srv/git/site.git"});
    assert_eq!(
        request(
            post.clone(),
            format!("{}/projects", server.url),
            None,
            Some(project)
        ),
        201
    );

    let out = token(
        dir,
        &["create", "bot", "--scope", "build", "--project", "site"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let bot = stdout(&out).trim().to_owned();
    assert!(
        bot.starts_with("rdev_") && !bot.contains(char::is_whitespace),
        "{bot}"
    );
    assert!(stderr(&out).contains("shown only now"), "{}", stderr(&out));

    assert_one_line_error(
        &token(
            dir,
            &["create", "x", "--scope", "build", "--project", "nope"],
        ),
        "project nope does not exist",
    );
    assert_one_line_error(
        &token(
            dir,
            &["create", "ops", "--scope", "admin", "--project", "site"],
        ),
        "cannot be limited to projects",
    );
    assert_one_line_error(
        &token(dir, &["create", "bot", "--scope", "read"]),
        "already exists",
    );

    let build = |tok: Option<&str>, project: &str| {
        request(
            post.clone(),
            format!("{}/project/{project}/build", server.url),
            tok,
            Some(json!({"prompt": "Add a FAQ"})),
        )
    };
    assert_eq!(build(Some(&bot), "site"), 202);
    assert_eq!(
        build(None, "site"),
        401,
        "a token exists, so the API is closed"
    );
    let get = |path: &str| {
        request(
            reqwest::Method::GET,
            format!("{}{path}", server.url),
            Some(&bot),
            None,
        )
    };
    assert_eq!(get("/secrets"), 403);
    assert_eq!(get("/tasks?project=other"), 403);

    let out = token(dir, &["list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listing = stdout(&out);
    let row = listing
        .lines()
        .find(|l| l.starts_with("bot "))
        .unwrap_or_else(|| panic!("{listing}"));
    assert!(row.contains(" build ") && row.contains(" site "), "{row}");
    assert!(
        !row.ends_with("never"),
        "the build above is its last use: {row}"
    );
    let out = token(dir, &["list", "--json"]);
    let json: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json[0]["name"], "bot");
    assert!(
        !stdout(&out).contains(&bot),
        "a listing never shows a token"
    );

    let out = token(dir, &["revoke", "bot"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(build(Some(&bot), "site"), 401);
    assert_one_line_error(&token(dir, &["revoke", "bot"]), "not found");
}

/// Runs `rdev serve ARGS` in a fresh directory and returns its output, failing the test if
/// it is still running after 60 s (it would be serving).
fn serve_expecting_exit(args: &[&str], env: &[(&str, &str)]) -> Output {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("rdev.toml"),
        "[agents]\nenabled = [\"claude-code\"]\n",
    )
    .unwrap();
    let mut child = Command::new(RDEV)
        .arg("serve")
        .args(args)
        .current_dir(tmp.path())
        .env_remove("RDEV_API_TOKEN")
        .env_remove("RDEV_ALLOW_UNAUTHENTICATED")
        .env_remove("RDEV_CONFIG")
        .env_remove("RDEV_DATABASE_URL")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rdev starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "rdev serve {args:?} kept running: {:?}",
                child.wait_with_output()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn serve_refuses_a_public_address_without_a_token_and_an_empty_token() {
    let out = serve_expecting_exit(&["--listen", "0.0.0.0:0"], &[]);
    assert_one_line_error(
        &out,
        "refusing to serve the API on 0.0.0.0:0 without authentication",
    );
    assert!(
        stderr(&out).contains("RDEV_ALLOW_UNAUTHENTICATED"),
        "{}",
        stderr(&out)
    );

    let out = serve_expecting_exit(&["--listen", "127.0.0.1:0"], &[("RDEV_API_TOKEN", "")]);
    assert_one_line_error(&out, "api_token is empty");
}
