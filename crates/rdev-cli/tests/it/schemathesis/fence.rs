//! A fenced `rdev serve` for the Schemathesis tests: started with the admin token, on a
//! fresh SQLite or PostgreSQL database, with nothing able to leave the machine (see the
//! parent module's doc for the fence and why each part is there), and seeded with a project
//! and a queued build. It holds no Schemathesis logic.

use std::{
    ffi::{OsStr, OsString},
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use rdev_testkit::{claude_bin, pg::PgDatabase};
use serde_json::{json, Value};

use crate::common::{serve_with_env, Server};

/// The admin token rdev is started with; redacted from everything printed.
pub const TOKEN: &str = "st-admin-token-7f3c9a1e5b";

/// Which database rdev runs on.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// A loopback listener standing in for "the internet": rdev's proxy variables point here,
/// so an outbound request ends on this machine. It records each request line (`CONNECT
/// host:443 HTTP/1.1`, `POST http://host/path HTTP/1.1`) and answers 403.
pub struct OutboundTrap {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl OutboundTrap {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, halt) = (Arc::clone(&seen), Arc::clone(&stop));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if halt.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&head);
                let line = line
                    .lines()
                    .next()
                    .unwrap_or("(no request line)")
                    .to_owned();
                log.lock().unwrap().push(line);
                let _ = conn.write_all(
                    b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        Self { url, seen, stop }
    }

    /// The request lines it has received so far.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for OutboundTrap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

/// A `git` that allows only local repositories, in `dir/fence-bin`; returns `PATH` for rdev
/// with it first.
fn git_fence(dir: &Path) -> OsString {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let real = std::env::split_paths(&path)
        .map(|p| p.join("git"))
        .find(|p| p.is_file())
        .expect("git on PATH");
    let bin = dir.join("fence-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("git");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n# rdev under Schemathesis: git may use local repositories only.\n\
             GIT_ALLOW_PROTOCOL=file\nexport GIT_ALLOW_PROTOCOL\nexec '{}' \"$@\"\n",
            real.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&path))).unwrap()
}

/// A fenced `rdev serve` (see the parent module's doc) and what it needs to stay alive.
pub struct Fenced {
    pub server: Server,
    pub trap: OutboundTrap,
    pub dir: tempfile::TempDir,
    // Last: the database is dropped after the server that uses it.
    _pg: Option<PgDatabase>,
}

/// Starts a fenced `rdev serve` with the admin token on `backend` (a fresh database).
pub fn serve_fenced(backend: Backend) -> Fenced {
    let dir = tempfile::tempdir().unwrap();
    let pg = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(PgDatabase::create()),
        ),
    };
    let database_url = match &pg {
        Some(pg) => pg.url.clone(),
        None => format!("sqlite:{}", dir.path().join("rdev.db").display()),
    };
    let config = dir.path().join("rdev.toml");
    // Only Claude Code (the default list would also supervise an `opencode serve`), with a
    // key that is never used, so builds are accepted; spares off: nothing fetches behind
    // a request's back.
    std::fs::write(
        &config,
        format!(
            "database_url = {database_url:?}\ndata_dir = {data:?}\ngit_spare_checkouts = 0\n\
             [agents]\nenabled = [\"claude-code\"]\n\
             [agents.claude_code]\nbin = {bin:?}\nconfig_root = {state:?}\n\
             [agents.claude_code.env]\nANTHROPIC_API_KEY = \"test-key-not-real\"\n",
            data = dir.path().join("data").display().to_string(),
            bin = claude_bin().display().to_string(),
            state = dir.path().join("claude-state").display().to_string(),
        ),
    )
    .unwrap();
    let trap = OutboundTrap::start();
    let path = git_fence(dir.path());
    let loopback = OsString::from("127.0.0.1,localhost");
    let proxy = OsString::from(&trap.url);
    let env: Vec<(&str, &OsStr)> = vec![
        ("RDEV_API_TOKEN", OsStr::new(TOKEN)),
        ("RDEV_WORKER_CONCURRENCY", OsStr::new("0")),
        ("PATH", &path),
        ("HTTP_PROXY", &proxy),
        ("http_proxy", &proxy),
        ("HTTPS_PROXY", &proxy),
        ("https_proxy", &proxy),
        ("ALL_PROXY", &proxy),
        ("all_proxy", &proxy),
        ("NO_PROXY", &loopback),
        ("no_proxy", &loopback),
    ];
    let server = serve_with_env(dir.path(), Some(&config), &env);
    Fenced {
        server,
        trap,
        dir,
        _pg: pg,
    }
}

/// A client that talks to loopback directly, whatever proxy the environment names.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// `method path` with the admin token and an optional JSON body; status and JSON body.
pub fn call(run: &Fenced, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = client()
        .request(method.parse().unwrap(), format!("{}{path}", run.server.url))
        .bearer_auth(TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

/// What Schemathesis starts from: project `demo` with one queued build, so listings and
/// stateful links have something to follow. On the way, proves the trap works: a build
/// with a public callback URL, cancelled, makes the dispatcher try to deliver, and the
/// attempt must arrive at the trap.
pub fn seed_and_check_the_fence(run: &Fenced) {
    let (status, body) = call(run, "POST", "/projects", Some(json!({"name": "demo"})));
    assert_eq!(status, 201, "creating project demo: {body}");
    let (status, body) = call(
        run,
        "POST",
        "/project/demo/build",
        Some(json!({"prompt": "x"})),
    );
    assert_eq!(status, 202, "queueing a build: {body}");

    let hook = "https://callback.rdev-fence.example/hook";
    let (status, body) = call(
        run,
        "POST",
        "/project/demo/build",
        Some(json!({"prompt": "fence check", "callback_url": hook})),
    );
    assert_eq!(status, 202, "queueing a build with a callback: {body}");
    let id = body["task_id"].as_str().unwrap().to_owned();
    let (status, body) = call(run, "POST", &format!("/tasks/{id}/cancel"), None);
    assert_eq!(status, 200, "cancelling it: {body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !run
        .trap
        .seen()
        .iter()
        .any(|l| l.contains("callback.rdev-fence.example"))
    {
        assert!(
            Instant::now() < deadline,
            "the callback of a cancelled task never reached the outbound trap, so the fence \
             does not hold; trap saw {:?}",
            run.trap.seen()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
