//! [`OpenCodeServer`]: an `opencode serve` that rdev starts and supervises itself — its own
//! process group (via [`crate::process`]), its own state directories, a random port read
//! from its "listening on" line, a password, a restart with backoff when it dies, and a
//! stop when rdev stops (shutdown token, [`OpenCodeServer::stop`], or drop). It publishes
//! where the server can be reached; it never talks to sessions and never decides what a
//! run's result is. How the server's command is built (environment, sandbox, gateway) is
//! `launch`'s (a child module).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use backon::BackoffBuilder;
use rand::{distr::Alphanumeric, Rng};
use rdev_core::{credentials::REDACTED, ErrorCode, SecretString};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::ChildStdout,
    sync::watch,
    task::JoinHandle,
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::{client::OpenCodeClient, config::OpenCodeConfig};
use crate::{
    process::{spawn_in_group, BoundedCapture, GroupChild},
    redact::EventRedactor,
    sandbox::Sandbox,
};

mod launch;

/// How much of the server's stderr is kept for error messages.
const STDERR_LIMIT: usize = 16 * 1024;

/// A server that stayed up this long starts the restart backoff from scratch.
const HEALTHY_UPTIME: Duration = Duration::from_secs(60);

/// Where a supervised server stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerState {
    /// A server process is starting (or about to be restarted).
    Starting,
    /// The server answers at `url` (through `socket`, when set: a sandboxed server with
    /// a network of its own is reached through its relay's Unix socket).
    Ready {
        url: reqwest::Url,
        pid: u32,
        /// Counts starts: 1 for the first server, 2 after the first restart, ...
        generation: u32,
        socket: Option<PathBuf>,
    },
    /// The last server died or never became ready; a restart follows.
    Down { reason: String },
    /// Supervision ended.
    Stopped,
}

/// Why a supervised server is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SupervisorError {
    /// The state directory cannot be created.
    #[error("cannot prepare opencode state dir {path}: {reason}")]
    StateDir { path: PathBuf, reason: String },
    /// The server did not become ready in time.
    #[error("supervised opencode server not ready after {waited:?}: {reason}")]
    NotReady { waited: Duration, reason: String },
    /// Supervision has ended (rdev is shutting down).
    #[error("supervised opencode server is stopped")]
    Stopped,
}

impl ErrorCode for SupervisorError {
    fn code(&self) -> &'static str {
        match self {
            Self::StateDir { .. } => "opencode_state_dir",
            Self::NotReady { .. } => "agent_unavailable",
            Self::Stopped => "opencode_server_stopped",
        }
    }
}

/// A supervised `opencode serve`. Dropping it stops the server.
#[derive(Debug)]
pub struct OpenCodeServer {
    state: watch::Receiver<ServerState>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
    username: String,
    password: SecretString,
    redactor: EventRedactor,
}

impl OpenCodeServer {
    /// Starts supervising a server for `config` (its `url` is ignored). Must be called
    /// inside a tokio runtime. Supervision ends when `shutdown` fires, on [`Self::stop`],
    /// or when this value is dropped.
    pub fn start(
        config: &OpenCodeConfig,
        shutdown: &CancellationToken,
    ) -> Result<Self, SupervisorError> {
        let state_dir = config.resolve_state_dir();
        for sub in ["data", "config", "cache", "state", "work"] {
            let path = state_dir.join(sub);
            std::fs::create_dir_all(&path).map_err(|e| SupervisorError::StateDir {
                path,
                reason: e.to_string(),
            })?;
        }
        // A supervised server always has a password: it listens on loopback, where any
        // local user could otherwise drive an agent that edits checkouts.
        let password = config.password.clone().unwrap_or_else(random_password);
        let username = config.username().to_owned();
        let redactor = config.redactor(Some(&password));
        let stop = shutdown.child_token();
        let (tx, rx) = watch::channel(ServerState::Starting);
        let sup = Supervisor {
            config: config.clone(),
            bin: config.resolve_bin(),
            state_dir,
            username: username.clone(),
            password: password.clone(),
            redactor: redactor.clone(),
            stop: stop.clone(),
            state: tx,
            sandbox: Sandbox::new(config.server.sandbox.clone()),
        };
        let task = tokio::spawn(sup.run());
        Ok(Self {
            state: rx,
            stop,
            task: Some(task),
            username,
            password,
            redactor,
        })
    }

    /// The current state.
    pub fn state(&self) -> ServerState {
        self.state.borrow().clone()
    }

    /// The basic-auth credentials clients must use.
    pub fn credentials(&self) -> (String, SecretString) {
        (self.username.clone(), self.password.clone())
    }

    /// A redactor for the server's secrets: its password, environment and inline config.
    pub fn redactor(&self) -> &EventRedactor {
        &self.redactor
    }

    /// Waits until the server is ready (or `timeout` passes) and returns its URL and
    /// generation.
    pub async fn wait_ready(
        &self,
        timeout: Duration,
    ) -> Result<(reqwest::Url, u32), SupervisorError> {
        self.wait_endpoint(timeout)
            .await
            .map(|(url, generation, _)| (url, generation))
    }

    /// [`Self::wait_ready`], with the Unix socket the server is reached through, if any.
    pub async fn wait_endpoint(
        &self,
        timeout: Duration,
    ) -> Result<(reqwest::Url, u32, Option<PathBuf>), SupervisorError> {
        let mut rx = self.state.clone();
        let mut last = String::from("still starting");
        let waited = tokio::time::timeout(timeout, async {
            loop {
                match rx.borrow_and_update().clone() {
                    ServerState::Ready {
                        url,
                        generation,
                        socket,
                        ..
                    } => return Ok((url, generation, socket)),
                    ServerState::Stopped => return Err(SupervisorError::Stopped),
                    ServerState::Down { reason } => last = reason,
                    ServerState::Starting => {}
                }
                if rx.changed().await.is_err() {
                    return Err(SupervisorError::Stopped);
                }
            }
        })
        .await;
        waited.unwrap_or(Err(SupervisorError::NotReady {
            waited: timeout,
            reason: last,
        }))
    }

    /// Stops the server (`SIGTERM` to its group, `SIGKILL` after the grace) and waits for
    /// supervision to end.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for OpenCodeServer {
    fn drop(&mut self) {
        // The task ends its child on cancel; if the runtime is gone, the child's own drop
        // kills the group.
        self.stop.cancel();
    }
}

/// The supervision loop's state.
struct Supervisor {
    config: OpenCodeConfig,
    bin: PathBuf,
    state_dir: PathBuf,
    username: String,
    password: SecretString,
    /// Scrubs the secrets above from stderr before it reaches logs, states and errors.
    redactor: EventRedactor,
    stop: CancellationToken,
    state: watch::Sender<ServerState>,
    sandbox: Sandbox,
}

impl Supervisor {
    fn backoff(&self) -> backon::ExponentialBackoff {
        backon::ExponentialBuilder::default()
            .with_min_delay(self.config.server.restart_min_delay)
            .with_max_delay(self.config.server.restart_max_delay)
            .with_jitter()
            .without_max_times()
            .build()
    }

    async fn run(self) {
        let mut delays = self.backoff();
        let mut generation = 0u32;
        while !self.stop.is_cancelled() {
            generation += 1;
            self.state.send_replace(ServerState::Starting);
            let up_since = Instant::now();
            let reason = match self.serve_once(generation).await {
                None => break,
                Some(reason) => reason,
            };
            tracing::warn!(%reason, generation, "supervised opencode server is down; restarting");
            self.state.send_replace(ServerState::Down {
                reason: reason.clone(),
            });
            if up_since.elapsed() >= HEALTHY_UPTIME {
                delays = self.backoff();
            }
            let delay = delays
                .next()
                .unwrap_or(self.config.server.restart_max_delay);
            tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        self.state.send_replace(ServerState::Stopped);
    }

    /// Runs one server process until it dies (`Some(reason)`) or supervision stops (`None`).
    async fn serve_once(&self, generation: u32) -> Option<String> {
        let (mut command, _scratch, socket) = match self.command().await {
            Ok(c) => c,
            Err(e) => return Some(format!("cannot start opencode serve: {e}")),
        };
        let mut child = match spawn_in_group(&mut command) {
            Ok(c) => c,
            Err(e) => return Some(format!("cannot run {}: {e}", self.bin.display())),
        };
        let pid = child.pid();
        let stderr = child
            .child_mut()
            .stderr
            .take()
            .map(|s| BoundedCapture::start(s, STDERR_LIMIT));
        let Some(stdout) = child.child_mut().stdout.take() else {
            return Some("no stdout pipe".to_owned());
        };
        let mut lines = BufReader::new(stdout).lines();
        let timeout = self.config.availability_timeout;
        let ready = tokio::select! {
            _ = self.stop.cancelled() => Err(None),
            r = self.await_ready(&mut lines, timeout, socket.as_deref()) => r.map_err(Some),
        };
        let url = match ready {
            Ok(url) => url,
            Err(None) => {
                self.end(&mut child, stderr).await;
                return None;
            }
            Err(Some(reason)) => {
                let tail = self.end(&mut child, stderr).await;
                return Some(format!("{reason}; stderr: {tail}"));
            }
        };
        tracing::info!(%url, pid, generation, "supervised opencode server ready");
        self.state.send_replace(ServerState::Ready {
            url,
            pid,
            generation,
            socket,
        });
        // Keep draining stdout so the server never blocks on a full pipe.
        let drain = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(target: "opencode_server", "{line}");
            }
        });
        // Tool shells run in sessions of their own; remembering the family now and then
        // lets the final kill find them after the server itself has died.
        let mut remember = tokio::time::interval(Duration::from_secs(2));
        let status = loop {
            tokio::select! {
                _ = self.stop.cancelled() => break None,
                s = child.wait() => break Some(s),
                _ = remember.tick() => child.remember_family(),
            }
        };
        drain.abort();
        match status {
            None => {
                self.end(&mut child, stderr).await;
                None
            }
            Some(status) => {
                let tail = self.end(&mut child, stderr).await;
                let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                Some(format!(
                    "opencode serve (pid {pid}) exited: {status}; stderr: {tail}"
                ))
            }
        }
    }

    /// Reads the "listening on" line, then polls health until the server answers.
    async fn await_ready(
        &self,
        lines: &mut tokio::io::Lines<BufReader<ChildStdout>>,
        timeout: Duration,
        socket: Option<&Path>,
    ) -> Result<reqwest::Url, String> {
        let start = Instant::now();
        let url = tokio::time::timeout(timeout, async {
            loop {
                match lines.next_line().await {
                    Ok(Some(line)) => {
                        if let Some(url) = parse_listening(&line) {
                            return Ok(url);
                        }
                    }
                    Ok(None) => return Err("exited before listening".to_owned()),
                    Err(e) => return Err(format!("reading its output: {e}")),
                }
            }
        })
        .await
        .map_err(|_| format!("no 'listening on' line after {timeout:?}"))??;
        let auth = Some((self.username.clone(), self.password.clone()));
        let client =
            OpenCodeClient::with_socket(url.clone(), socket, auth, self.config.request_timeout)
                .map_err(|e| e.to_string())?;
        let left = timeout.saturating_sub(start.elapsed());
        match client.wait_available(left, &self.stop).await {
            Ok(_) => Ok(url),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Ends the process family and returns the tail of its stderr.
    async fn end(&self, child: &mut GroupChild, stderr: Option<BoundedCapture>) -> String {
        let _ = child.terminate(self.config.server.kill_grace).await;
        let text = match stderr {
            Some(c) => c.finish(Duration::from_millis(500)).await,
            None => String::new(),
        };
        stderr_tail(&text, &self.redactor, &self.password)
    }
}

/// The last 2000 characters of a server's stderr with every secret redacted. The server
/// may print its environment or configuration, and the tail goes into logs, states and
/// errors. Redacted before cutting, so a secret across the cut cannot leave a piece behind.
fn stderr_tail(text: &str, redactor: &EventRedactor, password: &SecretString) -> String {
    let mut text = redactor.text(text.trim());
    // The redactor skips short values; a short configured password is still hidden.
    if !password.expose().is_empty() {
        text = text.replace(password.expose(), REDACTED);
    }
    let tail: String = text
        .chars()
        .rev()
        .take(2000)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if tail.is_empty() {
        "(none)".to_owned()
    } else {
        tail
    }
}

/// The URL in `opencode server listening on http://127.0.0.1:PORT`.
fn parse_listening(line: &str) -> Option<reqwest::Url> {
    let rest = line.split("listening on ").nth(1)?;
    reqwest::Url::parse(rest.split_whitespace().next()?).ok()
}

fn random_password() -> SecretString {
    let s: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(32)
        .map(char::from)
        .collect();
    SecretString::new(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_url_from_the_listening_line() {
        let url = parse_listening("opencode server listening on http://127.0.0.1:4096").unwrap();
        assert_eq!(url.port(), Some(4096));
        assert!(parse_listening("Warning: OPENCODE_SERVER_PASSWORD is not set").is_none());
    }

    #[test]
    fn stderr_tail_redacts_server_env_config_and_password() {
        let mut config = OpenCodeConfig::default();
        config.server.env.insert(
            "PROVIDER_API_KEY".into(),
            SecretString::new("sk-env-secret-1234"),
        );
        config.server.config_content = Some(SecretString::new(r#"{"key":"cfg-secret-5678"}"#));
        let password = SecretString::new("pw");
        let redactor = config.redactor(Some(&password));
        let stderr = format!(
            "  boot\nenv: PROVIDER_API_KEY=sk-env-secret-1234 b64={}\nconfig: {{\"key\":\"cfg-secret-5678\"}}\nauth pw\n",
            "c2stZW52LXNlY3JldC0xMjM0"
        );
        let tail = stderr_tail(&stderr, &redactor, &password);
        for secret in [
            "sk-env-secret-1234",
            "c2stZW52LXNlY3JldC0xMjM0",
            "cfg-secret-5678",
            "pw",
        ] {
            assert!(!tail.contains(secret), "{secret} in {tail}");
        }
        assert!(tail.starts_with("boot"), "{tail}");
        assert_eq!(stderr_tail(" \n", &redactor, &password), "(none)");
    }

    #[test]
    fn random_passwords_are_long_and_distinct() {
        let a = random_password();
        let b = random_password();
        assert_eq!(a.expose().len(), 32);
        assert_ne!(a.expose(), b.expose());
    }
}
