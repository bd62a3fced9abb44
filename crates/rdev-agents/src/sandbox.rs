//! The sandbox every locally run agent process starts in: bubblewrap (`bwrap`) with an
//! allow-list of mounts, new user/PID/IPC/UTS namespaces, a throw-away `HOME` and `/tmp`,
//! no capabilities and `no_new_privs` (bwrap always sets it). See docs/security.md.
//!
//! What the agent sees: read-only system directories (`/usr` and the merged-`/usr`
//! symlinks), a few `/etc` files (CA certificates, passwd/group, resolv.conf, hosts), the
//! agent CLI's install, its working directory read-write, the paths an adapter names
//! ([`Mounts`]) at the same absolute paths, and a fresh `/proc` and `/dev`. Nothing else:
//! not rdev's data directory, not `/root`, not a host socket. The environment is exactly
//! what the adapter set on the command (bwrap is started with a cleared environment; the
//! values are never put on bwrap's command line, where `ps` would show them).
//!
//! With rdev's model gateway ([`GatewayLink`], which rdev always runs) the sandbox has its
//! own network namespace with loopback only, and the agent starts under the [`relay`] (the
//! rdev binary, mounted read-only), which listens on [`RELAY_PORT`] inside and hands
//! connections to the gateway's Unix socket, mounted at [`GATEWAY_SOCKET`]: the model API
//! and the egress proxy are the only ways out. Without a gateway (this crate used on its
//! own, as its tests do) the network stays shared.
//!
//! This module builds commands and checks that the sandbox can start; it never decides
//! what an agent may do inside, and it does not supervise processes ([`crate::process`]).
//! Failing closed is the rule: without a working bwrap a run fails with
//! `sandbox_unavailable`, unless the operator set `agents.sandbox = "none"`.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::{Deserialize, Serialize};
use tokio::{process::Command, sync::OnceCell};

mod args;
pub mod handoff;
pub mod relay;
mod scratch;

pub use args::bwrap_args;
use args::{namespace_args, relay_args, system_args};
use rdev_core::SecretString;
pub use scratch::{sweep_locked_dirs, sweep_scratch, Scratch, SCRATCH_PREFIX};

/// The loopback port inside a sandbox where the relay reaches rdev's gateway (the model
/// API and the egress proxy).
pub const RELAY_PORT: u16 = 17700;
/// Where the gateway's Unix socket is mounted inside a sandbox.
pub const GATEWAY_SOCKET: &str = "/run/rdev/gw.sock";
/// Where the relay binary is mounted inside a sandbox.
pub const RELAY_PATH: &str = "/run/rdev/relay";
/// Where a host directory for sockets rdev connects to from outside is mounted.
pub const RELAY_IO_DIR: &str = "/run/rdev/io";

/// How agents reach rdev's model gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayLink {
    /// The gateway's Unix socket on the host, mounted into every sandbox.
    pub socket: PathBuf,
    /// The gateway's loopback TCP address, for agents run without a sandbox.
    pub tcp: std::net::SocketAddr,
    /// The relay program (`<bin> sandbox-relay ...`); `None`: none was found, and a
    /// sandboxed run fails closed.
    pub relay_bin: Option<PathBuf>,
    /// The token a shared agent server (OpenCode) presents; its calls are attributed by
    /// session ([`rdev_core::SessionAttribution`]).
    pub server_token: Option<SecretString>,
}

impl GatewayLink {
    /// The model API's base URL as an agent in `mode` sees it.
    pub fn base_url(&self, mode: SandboxMode) -> String {
        match mode {
            SandboxMode::Bubblewrap => format!("http://127.0.0.1:{RELAY_PORT}"),
            SandboxMode::None => format!("http://{}", self.tcp),
        }
    }

    /// The environment that points an agent at the gateway with `token`: the Messages
    /// API's base URL and key, and the egress proxy (the token is its password).
    pub fn agent_env(
        &self,
        mode: SandboxMode,
        token: &SecretString,
    ) -> Vec<(String, SecretString)> {
        gateway_env(self.base_url(mode), token)
    }
}

/// The environment that points an agent at the gateway at `base` (`http://host:port`)
/// with `token`: the Messages API's base URL and key, and the egress proxy (the token is
/// its password).
pub fn gateway_env(base: String, token: &SecretString) -> Vec<(String, SecretString)> {
    let proxy = base.replacen("http://", &format!("http://rdev:{}@", token.expose()), 1);
    let mut env = vec![
        ("ANTHROPIC_BASE_URL".to_owned(), SecretString::new(base)),
        ("ANTHROPIC_API_KEY".to_owned(), token.clone()),
    ];
    for name in ["HTTPS_PROXY", "https_proxy"] {
        env.push((name.to_owned(), SecretString::new(proxy.clone())));
    }
    for name in ["NO_PROXY", "no_proxy"] {
        env.push((name.to_owned(), SecretString::new("127.0.0.1,localhost")));
    }
    env
}

/// Whether an environment variable would give an agent a way to the model (or anywhere)
/// other than the gateway: model credentials and endpoints, and proxy settings. Dropped
/// from an agent's environment whenever a gateway grant takes their place.
pub fn bypasses_gateway(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    let model_setting = matches!(
        upper.as_str(),
        "ANTHROPIC_MODEL"
            | "ANTHROPIC_SMALL_FAST_MODEL"
            | "ANTHROPIC_DEFAULT_OPUS_MODEL"
            | "ANTHROPIC_DEFAULT_SONNET_MODEL"
            | "ANTHROPIC_DEFAULT_HAIKU_MODEL"
    );
    (upper.starts_with("ANTHROPIC_") && !model_setting)
        || upper.starts_with("CLAUDE_CODE_USE_")
        || upper.ends_with("_PROXY")
}

/// The relay a sandboxed process starts under.
#[derive(Debug, Clone, Default)]
pub struct Relay {
    /// The relay program on the host, mounted read-only at [`RELAY_PATH`].
    pub bin: PathBuf,
    /// The gateway's socket on the host, mounted at [`GATEWAY_SOCKET`].
    pub gateway_socket: PathBuf,
    /// A host directory mounted read-write at [`RELAY_IO_DIR`], where the relay creates
    /// the sockets of [`Self::expose`].
    pub io_dir: Option<PathBuf>,
    /// Sockets (file names in `io_dir`) the relay creates, each forwarding to a loopback
    /// port inside: how rdev reaches a server in the sandbox.
    pub expose: Vec<(String, u16)>,
}

impl Relay {
    /// The relay for `link`; fails closed when no relay binary was found.
    pub fn for_link(link: &GatewayLink) -> Result<Self, SandboxError> {
        let bin = link.relay_bin.clone().ok_or_else(|| {
            SandboxError(
                "no relay binary for the sandbox's network (gateway.relay_bin): the \
                 sandbox could reach nothing"
                    .into(),
            )
        })?;
        Ok(Self {
            bin,
            gateway_socket: link.socket.clone(),
            io_dir: None,
            expose: Vec::new(),
        })
    }

    /// The relay's argv inside the sandbox, wrapping `program args`.
    fn argv(&self, program: &Path, args: &[String]) -> Vec<OsString> {
        let relay = relay::RelayArgs {
            tcp: vec![(
                std::net::SocketAddr::from(([127, 0, 0, 1], RELAY_PORT)),
                PathBuf::from(GATEWAY_SOCKET),
            )],
            unix: self
                .expose
                .iter()
                .map(|(name, port)| {
                    (
                        Path::new(RELAY_IO_DIR).join(name),
                        std::net::SocketAddr::from(([127, 0, 0, 1], *port)),
                    )
                })
                .collect(),
            command: std::iter::once(program.as_os_str().to_owned())
                .chain(args.iter().map(OsString::from))
                .collect(),
        };
        std::iter::once(OsString::from(RELAY_PATH))
            .chain(relay.to_args())
            .collect()
    }
}

/// Whether agents run sandboxed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    /// Every agent process runs under bubblewrap; a run fails when it cannot start.
    #[default]
    Bubblewrap,
    /// No sandbox: agents run with rdev's own view of the machine. Only for hosts where
    /// something else is the boundary (a VM or container per rdev); rdev warns at start.
    None,
}

impl SandboxMode {
    /// The value shown in `GET /agents` and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bubblewrap => "bubblewrap",
            Self::None => "none",
        }
    }
}

/// Sandbox settings, shared by every local agent (`[agents]` in rdev's configuration).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxConfig {
    /// Bubblewrap (default) or none.
    pub mode: SandboxMode,
    /// The `bwrap` binary; default `bwrap` on `PATH`.
    pub bwrap_bin: Option<PathBuf>,
    /// Extra host paths mounted read-only at the same place (e.g. a CLI installed outside
    /// `/usr` and outside a `node_modules` tree).
    pub read_only: Vec<PathBuf>,
    /// rdev's model gateway; `None`: agents get no gateway (a sandboxed one then reaches
    /// nothing at all).
    pub gateway: Option<GatewayLink>,
}

/// The sandbox could not be set up; the run does not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SandboxError(pub String);

impl From<SandboxError> for rdev_core::AgentError {
    fn from(e: SandboxError) -> Self {
        rdev_core::AgentError::SandboxUnavailable(e.0)
    }
}

/// What a sandboxed process may see beyond the system: paths at the same absolute place
/// inside as outside.
#[derive(Debug, Clone, Default)]
pub struct Mounts {
    /// Mounted read-write (the working directory, the CLI's state directory).
    pub writable: Vec<PathBuf>,
    /// Mounted read-only, on top of the writable ones (a git directory, an object store).
    pub read_only: Vec<PathBuf>,
    /// The directory the process starts in.
    pub chdir: PathBuf,
}

/// Where the sandboxed `HOME` lives inside.
pub const SANDBOX_HOME: &str = "/home/agent";

/// A configured sandbox, cheap to clone. The first successful start check is remembered.
#[derive(Debug, Clone)]
pub struct Sandbox {
    config: SandboxConfig,
    checked: Arc<OnceCell<PathBuf>>,
}

impl Sandbox {
    /// A sandbox with `config`.
    pub fn new(config: SandboxConfig) -> Self {
        Self {
            config,
            checked: Arc::default(),
        }
    }

    /// Whether agents run sandboxed.
    pub fn mode(&self) -> SandboxMode {
        self.config.mode
    }

    /// The configured settings.
    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    fn bwrap_bin(&self) -> PathBuf {
        self.config
            .bwrap_bin
            .clone()
            .unwrap_or_else(|| PathBuf::from("bwrap"))
    }

    /// Checks that bwrap exists and can create the namespaces a run needs, by starting
    /// `true` in a minimal sandbox. A success is remembered; a failure is checked again
    /// next time (the operator may have fixed it). Returns the bwrap binary.
    pub async fn check(&self) -> Result<PathBuf, SandboxError> {
        self.checked
            .get_or_try_init(|| async {
                let bin = find_program(&self.bwrap_bin()).ok_or_else(|| {
                    SandboxError(format!(
                        "bubblewrap not found at {:?}: install the `bubblewrap` package \
                         (scripts/setup-tools does as root) or set agents.bwrap_bin; \
                         agents.sandbox = \"none\" runs agents unsandboxed",
                        self.bwrap_bin()
                    ))
                })?;
                let mut cmd = Command::new(&bin);
                cmd.args(namespace_args())
                    .arg("--unshare-net")
                    .args(system_args())
                    .args(["--proc", "/proc", "--dev", "/dev", "true"])
                    .env_clear()
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .kill_on_drop(true);
                let out = tokio::time::timeout(std::time::Duration::from_secs(10), cmd.output())
                    .await
                    .map_err(|_| SandboxError("bubblewrap's start check timed out".into()))?
                    .map_err(|e| SandboxError(format!("cannot run {}: {e}", bin.display())))?;
                if out.status.success() {
                    Ok(bin)
                } else {
                    let stderr = String::from_utf8_lossy(&out.stderr);
                    Err(SandboxError(format!(
                        "bubblewrap cannot create a sandbox here ({}): {}; user namespaces \
                         may be disabled (kernel.unprivileged_userns_clone, \
                         user.max_user_namespaces) or blocked by seccomp/AppArmor",
                        out.status,
                        stderr.trim()
                    )))
                }
            })
            .await
            .cloned()
    }

    /// Wraps `program args` in bwrap with `mounts`, `scratch` as `HOME` and `/tmp`, and
    /// `program`'s own install mounted read-only; with `relay`, the program runs as the
    /// relay's child. The returned command has a cleared environment holding `env` with
    /// `HOME` and `TMPDIR` pointed into the sandbox.
    /// Call [`Self::check`] first; its result is the `bwrap` path.
    #[allow(clippy::too_many_arguments)]
    pub fn command(
        bwrap: &Path,
        program: &Path,
        args: &[String],
        mounts: &Mounts,
        scratch: &Scratch,
        env: impl IntoIterator<Item = (OsString, OsString)>,
        extra_read_only: &[PathBuf],
        relay: Option<&Relay>,
    ) -> Command {
        let mut cmd = Command::new(bwrap);
        cmd.args(bwrap_args(program, mounts, scratch, extra_read_only));
        if let Some(relay) = relay {
            cmd.args(relay_args(relay));
        }
        cmd.arg("--");
        match relay {
            Some(relay) => cmd.args(relay.argv(program, args)),
            None => cmd.arg(program).args(args),
        };
        cmd.env_clear()
            .envs(
                env.into_iter()
                    .filter(|(k, _)| k != "HOME" && k != "TMPDIR"),
            )
            .env("HOME", SANDBOX_HOME)
            .env("TMPDIR", "/tmp");
        cmd
    }
}

/// `program` if it is a path to a file, else the first match on `PATH`.
pub fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_the_environment_never_reach_the_command_line() {
        let scratch = Scratch::new().unwrap();
        let cmd = Sandbox::command(
            Path::new("/usr/bin/bwrap"),
            Path::new("/usr/bin/true"),
            &["-p".into()],
            &Mounts {
                chdir: "/w".into(),
                ..Mounts::default()
            },
            &scratch,
            [
                ("API_KEY".into(), "sk-secret".into()),
                ("HOME".into(), "/root".into()),
            ],
            &[],
            None,
        );
        let std = cmd.as_std();
        assert!(std
            .get_args()
            .all(|a| !a.to_string_lossy().contains("sk-secret")));
        let envs: Vec<(String, Option<String>)> = std
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect();
        assert!(envs.contains(&("HOME".into(), Some(SANDBOX_HOME.into()))));
        assert!(envs.contains(&("API_KEY".into(), Some("sk-secret".into()))));
        assert!(!envs.contains(&("HOME".into(), Some("/root".into()))));
    }

    #[tokio::test]
    async fn a_missing_bwrap_fails_closed_with_a_clear_message() {
        let sandbox = Sandbox::new(SandboxConfig {
            bwrap_bin: Some("/nonexistent/bwrap".into()),
            ..SandboxConfig::default()
        });
        let err = sandbox.check().await.unwrap_err();
        assert!(err.0.contains("bubblewrap not found"), "{err}");
        let agent_err: rdev_core::AgentError = err.into();
        assert_eq!(
            rdev_core::ErrorCode::code(&agent_err),
            "sandbox_unavailable"
        );
    }
}
