//! End to end with the real `opencode serve` (installed by `scripts/setup-tools`) against
//! the scripted model: private XDG dirs, a config pointing the anthropic provider at
//! `base_url()/v1`, a session created and a write + bash + reply script completed through
//! `POST /session/{id}/message`. Plain reqwest: the real adapter lives in rdev-agents.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use rdev_testkit::{
    agent_env::{opencode_offline_env, write_opencode_config},
    opencode_bin, ScriptedModel,
};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

use crate::common::GroupGuard;

/// Safety net for start-up (about 8 s measured offline) and for one scripted turn.
const DEADLINE: Duration = Duration::from_secs(120);

struct OpenCode {
    base: String,
    _guard: GroupGuard,
    _child: Child,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `opencode serve` with private state under `root` and waits for its
/// "listening on" line. See docs/scripted-model.md for why each variable is set.
async fn start_opencode(model: &ScriptedModel, root: &Path, work: &Path) -> OpenCode {
    let config = root.join("opencode.json");
    write_opencode_config(&config, &model.base_url(), "test-key");
    let port = free_port();
    let dir = |name: &str| -> PathBuf {
        let d = root.join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let mut child = Command::new(opencode_bin())
        .args([
            "serve",
            "--hostname",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .current_dir(work)
        .env_clear()
        .env(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
        )
        .env("SHELL", "/bin/bash")
        .env("HOME", dir("home"))
        .env("XDG_DATA_HOME", dir("xdg/data"))
        .env("XDG_CONFIG_HOME", dir("xdg/config"))
        .env("XDG_CACHE_HOME", dir("xdg/cache"))
        .env("XDG_STATE_HOME", dir("xdg/state"))
        .env("OPENCODE_CONFIG", &config)
        .envs(opencode_offline_env())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn opencode serve");
    let guard = GroupGuard(child.id());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let listening = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("opencode server listening on ") {
                return url.trim().to_owned();
            }
        }
        panic!("opencode serve exited before listening");
    };
    let base = tokio::time::timeout(DEADLINE, listening)
        .await
        .unwrap_or_else(|_| panic!("opencode serve not listening within {DEADLINE:?}"));
    assert_eq!(base, format!("http://127.0.0.1:{port}"));
    // Keep draining stdout so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    OpenCode {
        base,
        _guard: guard,
        _child: child,
    }
}

async fn post_json(client: &reqwest::Client, url: &str, body: &Value) -> Value {
    let response = client
        .post(url)
        .json(body)
        .timeout(DEADLINE)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "POST {url} -> {status}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST {url}: not JSON ({e}): {text}"))
}

#[tokio::test]
async fn opencode_serve_completes_a_write_and_bash_script() {
    let model = ScriptedModel::start().await.unwrap();
    let root = tempfile::tempdir().unwrap();
    let work = root.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let work = std::fs::canonicalize(&work).unwrap();

    let started = Instant::now();
    let server = start_opencode(&model, root.path(), &work).await;
    let startup = started.elapsed();
    let client = reqwest::Client::new();
    let dir = work.display().to_string();

    let session = post_json(
        &client,
        &format!("{}/session?directory={dir}", server.base),
        &json!({}),
    )
    .await;
    let id = session["id"].as_str().expect("session id").to_owned();
    assert_eq!(session["directory"], dir.as_str());

    let turn_started = Instant::now();
    let prompt = "Write the file.\n@@write from_opencode.txt\nwritten by opencode\n@@end\n\
                  @@bash echo bash-ran > oc_bash.txt\n@@reply opencode script done";
    let answer = post_json(
        &client,
        &format!("{}/session/{id}/message?directory={dir}", server.base),
        &json!({"parts": [{"type": "text", "text": prompt}]}),
    )
    .await;
    eprintln!(
        "opencode: serve start-up {startup:?}, session + scripted turn {:?}",
        turn_started.elapsed()
    );

    assert_eq!(
        std::fs::read_to_string(work.join("from_opencode.txt")).unwrap(),
        "written by opencode\n"
    );
    assert_eq!(
        std::fs::read_to_string(work.join("oc_bash.txt")).unwrap(),
        "bash-ran\n"
    );
    let info = &answer["info"];
    assert_eq!(info["role"], "assistant");
    assert_eq!(info["modelID"], "claude-sonnet-4-5");
    assert!(info["tokens"]["input"].as_u64().unwrap() > 0, "{info}");
    let texts: Vec<&str> = answer["parts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] == "text")
        .filter_map(|p| p["text"].as_str())
        .collect();
    assert_eq!(texts, ["opencode script done"]);

    let requests = model.requests();
    let steps: Vec<usize> = requests
        .iter()
        .filter(|r| !r.side)
        .filter_map(|r| r.step)
        .collect();
    assert_eq!(steps, [0, 1, 2], "{requests:#?}");
    assert!(
        requests.iter().all(|r| r.path == "/v1/messages"),
        "{requests:#?}"
    );
}
