//! The two ways to start the `claude` CLI behind one [`Transport`] trait: a local child
//! process ([`LocalTransport`]) and `kubectl exec -i` into a pod ([`KubectlTransport`]).
//!
//! A transport builds the command and the bytes to write to stdin before the prompt; it
//! never puts the prompt or a secret in argv, and never runs a shell over the prompt. The
//! kubectl transport runs a fixed POSIX `sh` wrapper in the pod that reports its pid, `cd`s
//! to the workdir, reads `NAME=value` lines from stdin into its environment up to a blank
//! line, then `exec`s the CLI, whose stdin is then exactly the prompt. This module does not
//! supervise the processes it builds.

use std::{ffi::OsString, fmt, path::PathBuf, process::Stdio, time::Duration};

use rdev_core::{AgentError, SecretString};
use tokio::process::Command;

use super::config::{ConfigError, KubectlConfig};
use crate::{
    common::invalid,
    process,
    sandbox::{Mounts, Relay, Sandbox, SandboxMode, Scratch},
};

/// The first stdout line of the kubectl wrapper: `rdev-remote-pid <pid>`.
pub const REMOTE_PID_PREFIX: &str = "rdev-remote-pid ";

/// Runs in the pod: `$1` = workdir, then the CLI and its arguments.
const REMOTE_WRAPPER: &str = r#"printf 'rdev-remote-pid %s\n' "$$"
cd -- "$1" || { echo "rdev: cannot cd to $1" >&2; exit 97; }
shift
while IFS= read -r rdev_kv; do
  [ -n "$rdev_kv" ] || break
  export "$rdev_kv" || exit 98
done
exec "$@""#;

/// Runs in the pod on cancel: kills `$1` and its descendants, leaves first. Needs
/// `pgrep`; without it only `$1` itself is killed.
const REMOTE_KILL: &str = r#"rdev_kill() {
  for c in $(pgrep -P "$1" 2>/dev/null); do rdev_kill "$c"; done
  kill -KILL "$1" 2>/dev/null
}
rdev_kill "$1"
exit 0"#;

/// Everything a transport needs to start one run.
pub struct Launch {
    /// The CLI binary (a path on the machine where it runs).
    pub bin: PathBuf,
    /// CLI arguments (never the prompt).
    pub args: Vec<String>,
    /// The working directory.
    pub workdir: PathBuf,
    /// Variables passed through from rdev's environment.
    pub inherited: Vec<(OsString, OsString)>,
    /// Variables rdev sets for the CLI (flags, config dir, configured and request secrets).
    pub env: Vec<(String, SecretString)>,
    /// Paths besides the workdir the CLI writes (its config dir); a sandbox mounts them.
    pub writable: Vec<PathBuf>,
    /// Paths the CLI may read, never write (the checkout's git dir and object store).
    pub read_only: Vec<PathBuf>,
}

impl fmt::Debug for Launch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("Launch")
            .field("bin", &self.bin)
            .field("args", &self.args)
            .field("workdir", &self.workdir)
            .field("env", &names)
            .finish_non_exhaustive()
    }
}

/// A command ready to spawn, and what to write to its stdin before the prompt.
pub struct Prepared {
    /// The command, with piped stdio and a cleared environment.
    pub command: Command,
    /// Bytes before the prompt on stdin; may hold secrets, so it is never formatted.
    pub stdin_preamble: Vec<u8>,
    /// The sandbox's throw-away `HOME` and `/tmp`; keep it until the run has ended.
    pub scratch: Option<Scratch>,
}

impl fmt::Debug for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prepared")
            .field("command", &self.command)
            .field("stdin_preamble_len", &self.stdin_preamble.len())
            .field("sandboxed", &self.scratch.is_some())
            .finish()
    }
}

/// Starts the CLI somewhere.
#[async_trait::async_trait]
pub trait Transport: Send + Sync + fmt::Debug {
    /// Builds the command for `launch`. A sandboxed transport that cannot start its
    /// sandbox fails with `sandbox_unavailable`.
    async fn prepare(&self, launch: Launch) -> Result<Prepared, AgentError>;

    /// Whether the first stdout line is a `rdev-remote-pid` line to consume.
    fn reports_remote_pid(&self) -> bool;

    /// Kills the remote process `pid` and its descendants (kubectl); a no-op locally.
    async fn kill_remote(&self, pid: u32, timeout: Duration) -> Result<(), String>;
}

fn piped(mut command: Command) -> Command {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs the CLI as a local child process, inside the [`Sandbox`] unless it is configured
/// off (`agents.sandbox = "none"`).
#[derive(Debug, Clone)]
pub struct LocalTransport {
    sandbox: Sandbox,
}

impl LocalTransport {
    /// A local transport with `sandbox`.
    pub fn new(sandbox: Sandbox) -> Self {
        Self { sandbox }
    }
}

#[async_trait::async_trait]
impl Transport for LocalTransport {
    async fn prepare(&self, launch: Launch) -> Result<Prepared, AgentError> {
        let env = launch.inherited.into_iter().chain(
            launch
                .env
                .iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v.expose()))),
        );
        let (command, scratch) = match self.sandbox.mode() {
            SandboxMode::None => {
                let mut command = Command::new(&launch.bin);
                command
                    .args(&launch.args)
                    .current_dir(&launch.workdir)
                    .env_clear()
                    .envs(env);
                (command, None)
            }
            SandboxMode::Bubblewrap => {
                // Inside, a missing binary would only be bwrap's exit status; say it here.
                if crate::sandbox::find_program(&launch.bin).is_none() {
                    return Err(AgentError::Spawn(format!(
                        "{}: No such file or directory",
                        launch.bin.display()
                    )));
                }
                let bwrap = self.sandbox.check().await?;
                let scratch = Scratch::new()?;
                let mut writable = vec![launch.workdir.clone()];
                writable.extend(launch.writable);
                let mounts = Mounts {
                    writable,
                    read_only: launch.read_only,
                    chdir: launch.workdir,
                };
                let relay = match &self.sandbox.config().gateway {
                    Some(link) => Some(Relay::for_link(link)?),
                    None => None,
                };
                let command = Sandbox::command(
                    &bwrap,
                    &launch.bin,
                    &launch.args,
                    &mounts,
                    &scratch,
                    env,
                    &self.sandbox.config().read_only,
                    relay.as_ref(),
                );
                (command, Some(scratch))
            }
        };
        Ok(Prepared {
            command: piped(command),
            stdin_preamble: Vec::new(),
            scratch,
        })
    }

    fn reports_remote_pid(&self) -> bool {
        false
    }

    async fn kill_remote(&self, _pid: u32, _timeout: Duration) -> Result<(), String> {
        Ok(())
    }
}

/// Runs the CLI in a pod through `kubectl exec -i`.
#[derive(Debug, Clone)]
pub struct KubectlTransport {
    config: KubectlConfig,
    /// Environment for kubectl itself (`PATH`, `HOME`, `KUBECONFIG`, ...).
    inherited: Vec<(OsString, OsString)>,
}

impl KubectlTransport {
    /// A transport for `config`; `inherited` is kubectl's own environment.
    pub fn new(config: KubectlConfig, inherited: Vec<(OsString, OsString)>) -> Self {
        Self { config, inherited }
    }

    /// `exec -i POD [-n NS] [-c C] --`, the start of every kubectl command line.
    fn exec_prefix(&self) -> Vec<String> {
        let mut args = vec!["exec".to_owned(), "-i".to_owned(), self.config.pod.clone()];
        if let Some(ns) = &self.config.namespace {
            args.extend(["-n".to_owned(), ns.clone()]);
        }
        if let Some(c) = &self.config.container {
            args.extend(["-c".to_owned(), c.clone()]);
        }
        args.push("--".to_owned());
        args
    }
}

#[async_trait::async_trait]
impl Transport for KubectlTransport {
    async fn prepare(&self, launch: Launch) -> Result<Prepared, AgentError> {
        let mut preamble = Vec::new();
        for (k, v) in &launch.env {
            let value = v.expose();
            if value.contains(['\n', '\0']) {
                let e = ConfigError::InvalidEnvValue(k.clone());
                return Err(invalid("env", e.to_string()));
            }
            preamble.extend_from_slice(format!("{k}={value}\n").as_bytes());
        }
        preamble.push(b'\n');
        let mut command = piped(Command::new(&self.config.kubectl_bin));
        command
            .env_clear()
            .args(self.exec_prefix())
            .args(["sh", "-c", REMOTE_WRAPPER, "rdev-claude"])
            .arg(&launch.workdir)
            .arg(&launch.bin)
            .args(&launch.args)
            .envs(self.inherited.iter().cloned());
        Ok(Prepared {
            command,
            stdin_preamble: preamble,
            scratch: None,
        })
    }

    fn reports_remote_pid(&self) -> bool {
        true
    }

    async fn kill_remote(&self, pid: u32, timeout: Duration) -> Result<(), String> {
        let mut command = Command::new(&self.config.kubectl_bin);
        command
            .args(self.exec_prefix())
            .args(["sh", "-c", REMOTE_KILL, "rdev-cancel", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env_clear()
            .envs(self.inherited.iter().cloned());
        let mut child = process::spawn_in_group(&mut command).map_err(|e| e.to_string())?;
        let stderr = child
            .child_mut()
            .stderr
            .take()
            .map(|s| process::BoundedCapture::start(s, 4096));
        let status = match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => status.map_err(|e| e.to_string())?,
            Err(_) => {
                child.terminate(Duration::ZERO).await.ok();
                return Err(format!("remote kill did not finish within {timeout:?}"));
            }
        };
        child.cleanup();
        if status.success() {
            Ok(())
        } else {
            let err = match stderr {
                Some(c) => c.finish(Duration::from_millis(200)).await,
                None => String::new(),
            };
            Err(format!("remote kill exited with {status}: {}", err.trim()))
        }
    }
}

/// Parses a `rdev-remote-pid <pid>` line.
pub fn parse_remote_pid(line: &[u8]) -> Option<u32> {
    std::str::from_utf8(line)
        .ok()?
        .trim()
        .strip_prefix(REMOTE_PID_PREFIX)?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch() -> Launch {
        Launch {
            bin: "claude".into(),
            args: vec!["-p".into()],
            workdir: "/w".into(),
            inherited: vec![],
            env: vec![("ANTHROPIC_API_KEY".into(), SecretString::new("sk-secret"))],
            writable: vec![],
            read_only: vec![],
        }
    }

    #[tokio::test]
    async fn kubectl_puts_secrets_on_stdin_never_in_argv() {
        let t = KubectlTransport::new(
            KubectlConfig {
                kubectl_bin: "/k".into(),
                pod: "pod-1".into(),
                namespace: Some("ns".into()),
                container: Some("c".into()),
                gateway_url: None,
            },
            vec![],
        );
        let p = t.prepare(launch()).await.unwrap();
        let argv: Vec<String> = p
            .command
            .as_std()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            &argv[..8],
            ["exec", "-i", "pod-1", "-n", "ns", "-c", "c", "--"]
        );
        assert!(argv.iter().all(|a| !a.contains("sk-secret")));
        assert_eq!(p.stdin_preamble, b"ANTHROPIC_API_KEY=sk-secret\n\n");
        assert!(!format!("{p:?}").contains("sk-secret"));
    }

    #[tokio::test]
    async fn kubectl_refuses_values_with_newlines() {
        let t = KubectlTransport::new(
            KubectlConfig {
                kubectl_bin: "/k".into(),
                pod: "p".into(),
                namespace: None,
                container: None,
                gateway_url: None,
            },
            vec![],
        );
        let mut l = launch();
        l.env.push(("X".into(), SecretString::new("a\nb")));
        let err = t.prepare(l).await.unwrap_err();
        assert!(err.to_string().contains("newline"), "{err}");
    }

    #[test]
    fn parses_remote_pid_lines() {
        assert_eq!(parse_remote_pid(b"rdev-remote-pid 4711"), Some(4711));
        assert_eq!(parse_remote_pid(b"{\"type\":\"system\"}"), None);
    }
}
