//! Starting the real `rdev` binary as a child process and finding its address.
#![allow(dead_code)]

use std::{
    ffi::OsStr,
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::Value;

/// The binary under test.
pub const RDEV: &str = env!("CARGO_BIN_EXE_rdev");

/// A running `rdev serve`; killed when dropped.
pub struct Server {
    pub child: Child,
    pub url: String,
    /// Its JSON log lines so far.
    pub logs: Arc<Mutex<Vec<Value>>>,
}

impl Server {
    /// The log lines whose message is `message`.
    pub fn logged(&self, message: &str) -> Vec<Value> {
        let logs = self.logs.lock().unwrap();
        logs.iter()
            .filter(|v| v["message"] == message)
            .cloned()
            .collect()
    }
}

impl Drop for Server {
    /// SIGTERM first, so rdev stops what it supervises (a supervised `opencode serve`),
    /// then SIGKILL if it has not exited within 20 s.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = self.child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `rdev serve --listen 127.0.0.1:0 [--config FILE]` in `dir` and waits for its
/// "rdev listening" log line.
pub fn serve(dir: &Path, config: Option<&Path>) -> Server {
    serve_with_env(dir, config, &[])
}

/// [`serve`] with extra environment variables.
pub fn serve_with_env(dir: &Path, config: Option<&Path>, env: &[(&str, &OsStr)]) -> Server {
    let mut cmd = Command::new(RDEV);
    cmd.envs(env.iter().copied());
    cmd.args(["serve", "--listen", "127.0.0.1:0"]);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let mut child = cmd
        .current_dir(dir)
        .env("RDEV_LOG_FORMAT", "json")
        .env_remove("RDEV_DATABASE_URL")
        .env_remove("RDEV_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rdev starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let logs = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&logs);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if v["message"] == "rdev listening" {
                    let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_owned());
                }
                sink.lock().unwrap().push(v);
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("rdev serve logs its address");
    Server {
        child,
        url: format!("http://{addr}"),
        logs,
    }
}
