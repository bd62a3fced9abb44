//! How a supervised `opencode serve` is launched: its argv, its environment (state
//! directories, credentials, inline configuration), its sandbox mounts and, with rdev's
//! model gateway, the relay and the provider configuration that send its model calls
//! through the gateway. It builds the command; it never spawns, watches or restarts the
//! process (that is the parent module's supervision loop).

use std::{
    ffi::{OsStr, OsString},
    path::PathBuf,
    process::Stdio,
};

use rdev_core::SecretString;
use tokio::process::Command;

use super::Supervisor;
use crate::{
    opencode::config::{PASSWORD_ENV, USERNAME_ENV},
    sandbox::{bypasses_gateway, Mounts, Relay, Sandbox, SandboxMode, Scratch},
};

impl Supervisor {
    /// The server's command: `opencode serve` inside the sandbox (unless configured off),
    /// seeing its state directory and the task roots read-write. The returned scratch
    /// directory (the sandbox's `HOME` and `/tmp`) must live as long as the process; the
    /// returned socket, when set, is where the server is reached (through its relay).
    ///
    /// With rdev's gateway, the server's model calls go there with the gateway's server
    /// token (every model credential and proxy of its environment is dropped), and each
    /// run attributes its session to its attempt's grant.
    pub(super) async fn command(
        &self,
    ) -> Result<(Command, Option<Scratch>, Option<PathBuf>), String> {
        let server = &self.config.server;
        let mode = self.sandbox.mode();
        let gateway = server
            .sandbox
            .gateway
            .as_ref()
            .and_then(|g| g.server_token.as_ref().map(|t| (g, t)));
        let relayed = gateway.is_some() && mode == SandboxMode::Bubblewrap;
        let port = if relayed {
            SANDBOX_PORT.to_string()
        } else {
            "0".into()
        };
        let args: Vec<String> = ["serve", "--hostname", "127.0.0.1", "--port", &port]
            .into_iter()
            .map(str::to_owned)
            .collect();
        let workdir = self.state_dir.join("work");
        let mut env: Vec<(OsString, OsString)> = crate::env::inherited(&server.inherit_env);
        let mut set = |k: &str, v: &OsStr| env.push((k.into(), v.to_owned()));
        for (name, sub) in [
            ("XDG_DATA_HOME", "data"),
            ("XDG_CONFIG_HOME", "config"),
            ("XDG_CACHE_HOME", "cache"),
            ("XDG_STATE_HOME", "state"),
        ] {
            set(name, self.state_dir.join(sub).as_os_str());
        }
        // A supervised server is pinned to the installed version.
        set("OPENCODE_DISABLE_AUTOUPDATE", OsStr::new("1"));
        set(PASSWORD_ENV, OsStr::new(self.password.expose()));
        set(USERNAME_ENV, OsStr::new(&self.username));
        if let Some(file) = &server.config_file {
            set("OPENCODE_CONFIG", file.as_os_str());
        }
        if let Some(content) = &server.config_content {
            set("OPENCODE_CONFIG_CONTENT", OsStr::new(content.expose()));
        }
        for (name, value) in &server.env {
            set(name, OsStr::new(value.expose()));
        }
        if let Some((link, token)) = gateway {
            env.retain(|(k, _)| !k.to_str().is_some_and(bypasses_gateway));
            let base = format!("{}/v1", link.base_url(mode));
            let content = gateway_config(server.config_content.as_ref(), &base, token)?;
            env.push(("OPENCODE_CONFIG_CONTENT".into(), content.into()));
            for (k, v) in link.agent_env(mode, token) {
                env.push((k.into(), v.expose().into()));
            }
            // The AI SDK's Anthropic provider expects the version in its base URL.
            env.push(("ANTHROPIC_BASE_URL".into(), base.into()));
        }
        let (mut cmd, scratch, socket) = match mode {
            SandboxMode::None => {
                let mut cmd = Command::new(&self.bin);
                cmd.args(&args).current_dir(&workdir).env_clear().envs(env);
                (cmd, None, None)
            }
            SandboxMode::Bubblewrap => {
                let bwrap = self.sandbox.check().await.map_err(|e| e.to_string())?;
                let scratch = Scratch::new().map_err(|e| e.to_string())?;
                let mut read_only = server.task_read_only.clone();
                read_only.extend(server.config_file.iter().cloned());
                let mounts = Mounts {
                    writable: std::iter::once(self.state_dir.clone())
                        .chain(server.task_roots.iter().cloned())
                        .collect(),
                    read_only,
                    chdir: workdir,
                };
                let extra = &self.sandbox.config().read_only;
                let (relay, socket) = match gateway {
                    Some((link, _)) => {
                        let io = scratch.path().join("io");
                        std::fs::create_dir(&io).map_err(|e| e.to_string())?;
                        let mut relay = Relay::for_link(link).map_err(|e| e.to_string())?;
                        relay.io_dir = Some(io.clone());
                        relay.expose = vec![(SOCKET_NAME.to_owned(), SANDBOX_PORT)];
                        (Some(relay), Some(io.join(SOCKET_NAME)))
                    }
                    None => (None, None),
                };
                let cmd = Sandbox::command(
                    &bwrap,
                    &self.bin,
                    &args,
                    &mounts,
                    &scratch,
                    env,
                    extra,
                    relay.as_ref(),
                );
                (cmd, Some(scratch), socket)
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Ok((cmd, scratch, socket))
    }
}

/// The port `opencode serve` listens on inside a sandbox with a network of its own (it is
/// alone there; its relay carries rdev's calls to it).
const SANDBOX_PORT: u16 = 4096;

/// The relay's socket for rdev's calls, in the sandbox's io directory.
const SOCKET_NAME: &str = "opencode.sock";

/// `configured` (the inline OpenCode configuration, if any) with the Anthropic provider
/// pointed at rdev's gateway: `base` and the gateway's server token as its key. The
/// inline configuration is OpenCode's last layer, so it wins over a configuration file.
fn gateway_config(
    configured: Option<&SecretString>,
    base: &str,
    token: &SecretString,
) -> Result<String, String> {
    let mut config: serde_json::Value = match configured {
        Some(c) => serde_json::from_str(c.expose())
            .map_err(|e| format!("agents.opencode.server.config_content is not JSON: {e}"))?,
        None => serde_json::json!({}),
    };
    if !config.is_object() {
        return Err("agents.opencode.server.config_content must be a JSON object".into());
    }
    let options = &mut config["provider"]["anthropic"]["options"];
    if !options.is_object() && !options.is_null() {
        return Err("provider.anthropic.options must be an object".into());
    }
    options["baseURL"] = serde_json::json!(base);
    options["apiKey"] = serde_json::json!(token.expose());
    Ok(config.to_string())
}
