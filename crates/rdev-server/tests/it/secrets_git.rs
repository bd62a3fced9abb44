//! The git token hand-off against real `git`: a bare repository served over loopback HTTP
//! (git's "dumb" protocol, static files) by a server that demands the token. While git is
//! talking to it, the server takes a `ps` snapshot; afterwards the clone's `.git` is
//! searched. The token must authenticate, yet appear in neither.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use axum::{
    body::Body,
    extract::{Request, State},
    http::{header, StatusCode},
    response::Response,
    Router,
};
use base64::{engine::general_purpose::STANDARD, Engine};
use rdev_core::SecretString;
use rdev_server::secrets::git_env;
use tokio::process::Command;

const TOKEN: &str = "ghp_LoopbackToken0123456789";

#[derive(Clone)]
struct Served {
    root: PathBuf,
    /// `ps -eo args` output taken during each authorised request.
    snapshots: Arc<Mutex<Vec<String>>>,
}

async fn serve_file(State(s): State<Served>, req: Request) -> Response {
    let expected = format!(
        "Basic {}",
        STANDARD.encode(format!("x-access-token:{TOKEN}"))
    );
    let authorised = req
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == expected.as_bytes());
    if !authorised {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(header::WWW_AUTHENTICATE, "Basic realm=\"git\"")
            .body(Body::empty())
            .unwrap();
    }
    let ps = Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .await
        .unwrap();
    s.snapshots
        .lock()
        .unwrap()
        .push(String::from_utf8_lossy(&ps.stdout).into_owned());
    let rel = req.uri().path().trim_start_matches("/repo.git/");
    if rel.contains("..") {
        return Response::builder().status(400).body(Body::empty()).unwrap();
    }
    match tokio::fs::read(s.root.join(rel)).await {
        Ok(bytes) => Response::new(Body::from(bytes)),
        Err(_) => Response::builder().status(404).body(Body::empty()).unwrap(),
    }
}

async fn git(
    dir: &Path,
    args: &[&str],
    env: &[(String, String)],
    home: &Path,
) -> std::process::Output {
    Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .output()
        .await
        .expect("git runs")
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            hits.extend(files_containing(&path, needle));
        } else if let Ok(bytes) = std::fs::read(&path) {
            if bytes.windows(needle.len()).any(|w| w == needle) {
                hits.push(path);
            }
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_authenticates_via_env_only_and_leaves_no_token_in_ps_or_git_config() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let (seed, remote) = (tmp.path().join("seed"), tmp.path().join("remote.git"));
    std::fs::create_dir_all(&seed).unwrap();
    let none: Vec<(String, String)> = Vec::new();
    for args in [
        &["init", "-q", "-b", "main", "."][..],
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "seed",
        ],
        &["clone", "-q", "--bare", ".", remote.to_str().unwrap()],
    ] {
        let out = git(&seed, args, &none, &home).await;
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = git(&remote, &["update-server-info"], &none, &home).await;
    assert!(out.status.success());

    let served = Served {
        root: remote.clone(),
        snapshots: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://127.0.0.1:{}/repo.git",
        listener.local_addr().unwrap().port()
    );
    let app = Router::new()
        .fallback(serve_file)
        .with_state(served.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    // Without the token the server refuses: the check below is not vacuous.
    let out = git(tmp.path(), &["clone", "-q", &url, "denied"], &none, &home).await;
    assert!(!out.status.success(), "clone without a token succeeded");

    let env = git_env(&SecretString::new(TOKEN), &url);
    let out = git(tmp.path(), &["clone", "-q", &url, "work"], &env, &home).await;
    assert!(
        out.status.success(),
        "clone failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let work = tmp.path().join("work");
    let log = git(&work, &["log", "--format=%s"], &none, &home).await;
    assert_eq!(String::from_utf8_lossy(&log.stdout).trim(), "seed");

    // ps while git was talking to us: git was visible, the token was not.
    let snapshots = served.snapshots.lock().unwrap().clone();
    assert!(!snapshots.is_empty());
    assert!(
        snapshots
            .iter()
            .any(|s| s.contains("git-remote-http") || s.contains("git clone")),
        "ps did not show the git process: {snapshots:?}"
    );
    let b64 = STANDARD.encode(format!("x-access-token:{TOKEN}"));
    for s in &snapshots {
        assert!(
            !s.contains(TOKEN) && !s.contains(&b64),
            "token in ps output: {s}"
        );
    }

    // Nothing under .git (config included) nor in HOME holds the token or the header.
    for needle in [
        TOKEN.as_bytes(),
        b64.as_bytes(),
        b"extraHeader",
        b"extraheader",
    ] {
        assert_eq!(
            files_containing(&work.join(".git"), needle),
            Vec::<PathBuf>::new()
        );
        assert_eq!(files_containing(&home, needle), Vec::<PathBuf>::new());
    }
    let config = std::fs::read_to_string(work.join(".git/config")).unwrap();
    assert!(config.contains(&url), "remote URL is recorded: {config}");
    // The argv we build has no `-c` and no token: everything is in the environment.
    assert!(env.iter().all(|(k, _)| k.starts_with("GIT_CONFIG_")));
    server.abort();
}
