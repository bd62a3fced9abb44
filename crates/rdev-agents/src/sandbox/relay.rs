//! The relay inside a sandbox's network namespace (`rdev sandbox-relay`, or the
//! `rdev-sandbox-relay` binary): the sandbox has loopback only, so the relay listens on a
//! loopback port inside and hands each connection to rdev's gateway through the Unix
//! socket bind-mounted into the sandbox (`--tcp ADDR=SOCKET`): the connection's descriptor
//! is passed over the socket ([`super::handoff`]) and the gateway serves it from then on,
//! so no byte of a model call goes through the relay. For a server rdev talks to
//! from outside (the supervised `opencode serve`), it also carries connections the other
//! way: it creates a Unix socket in a directory mounted from the host and forwards each
//! connection to a loopback port inside (`--unix SOCKET=ADDR`). After its listeners are up
//! it runs the agent as its child (`-- PROGRAM ARGS...`, stdio and environment passed on)
//! and exits with the agent's status.
//!
//! It moves connections and bytes and nothing else: it reads no request, holds no key (the upstream key
//! stays in rdev's gateway, outside), and its argv holds only addresses and paths.

use std::{
    ffi::{OsStr, OsString},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
};

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// The subcommand word (`rdev sandbox-relay ...`); the standalone binary accepts it too.
pub const SUBCOMMAND: &str = "sandbox-relay";

/// What the relay is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayArgs {
    /// Loopback listeners inside, each forwarding to a Unix socket.
    pub tcp: Vec<(SocketAddr, PathBuf)>,
    /// Unix sockets to create, each forwarding to a loopback address inside.
    pub unix: Vec<(PathBuf, SocketAddr)>,
    /// The agent and its arguments.
    pub command: Vec<OsString>,
}

impl RelayArgs {
    /// The argument list (after the program name) that [`parse`] reads back.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut out: Vec<OsString> = vec![SUBCOMMAND.into()];
        for (addr, socket) in &self.tcp {
            let mut v = OsString::from(format!("{addr}="));
            v.push(socket);
            out.extend(["--tcp".into(), v]);
        }
        for (socket, addr) in &self.unix {
            let mut v = socket.as_os_str().to_owned();
            v.push(format!("={addr}"));
            out.extend(["--unix".into(), v]);
        }
        out.push("--".into());
        out.extend(self.command.iter().cloned());
        out
    }
}

fn split_eq(v: &OsStr) -> Option<(String, String)> {
    let s = v.to_str()?;
    let (a, b) = s.split_once('=')?;
    Some((a.to_owned(), b.to_owned()))
}

/// Parses `[sandbox-relay] (--tcp ADDR=SOCKET | --unix SOCKET=ADDR)* -- PROGRAM ARGS...`.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<RelayArgs, String> {
    let mut args = args.into_iter().peekable();
    if args.peek().is_some_and(|a| a == SUBCOMMAND) {
        args.next();
    }
    let mut relay = RelayArgs {
        tcp: Vec::new(),
        unix: Vec::new(),
        command: Vec::new(),
    };
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--") => {
                relay.command = args.collect();
                break;
            }
            Some(flag @ ("--tcp" | "--unix")) => {
                let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
                let (a, b) = split_eq(&value).ok_or_else(|| format!("{flag} takes A=B"))?;
                if flag == "--tcp" {
                    let addr: SocketAddr = a.parse().map_err(|e| format!("--tcp {a}: {e}"))?;
                    relay.tcp.push((addr, PathBuf::from(b)));
                } else {
                    let addr: SocketAddr = b.parse().map_err(|e| format!("--unix {b}: {e}"))?;
                    relay.unix.push((PathBuf::from(a), addr));
                }
            }
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    if relay.command.is_empty() {
        return Err("nothing to run after --".into());
    }
    Ok(relay)
}

/// Runs the relay with `args` (the process's arguments after its name) and returns the
/// agent's exit status; errors go to stderr as one line.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("rdev sandbox-relay: {e}");
        ExitCode::from(125)
    };
    let relay = match parse(args) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&e),
    };
    match runtime.block_on(run(relay)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => fail(&e),
    }
}

/// Binds every listener, then runs the command and forwards until it exits.
async fn run(relay: RelayArgs) -> std::io::Result<u8> {
    for (addr, socket) in relay.tcp {
        let listener = TcpListener::bind(addr).await?;
        tokio::spawn(async move {
            while let Ok((inside, _)) = listener.accept().await {
                let socket = socket.clone();
                tokio::spawn(async move {
                    // The gateway serves the connection itself; the relay's copies close.
                    if let Ok(outside) = UnixStream::connect(&socket).await {
                        let _ = super::handoff::send(&outside, &inside).await;
                    }
                });
            }
        });
    }
    for (socket, addr) in relay.unix {
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket)?;
        tokio::spawn(async move {
            while let Ok((mut outside, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut inside) = TcpStream::connect(addr).await {
                        let _ = inside.set_nodelay(true);
                        let _ = copy(&mut outside, &mut inside).await;
                    }
                });
            }
        });
    }
    let mut command = relay.command.into_iter();
    let program = command.next().unwrap_or_default();
    let status = tokio::process::Command::new(&program)
        .args(command)
        .status()
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("{program:?}: {e}")))?;
    use std::os::unix::process::ExitStatusExt;
    let code = match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 1,
    };
    Ok(u8::try_from(code).unwrap_or(1))
}

/// Copies both ways until both sides are done (rdev's calls to a server inside), with
/// buffers large enough that an answer of megabytes is not cut into 8 KiB writes.
async fn copy<A, B>(a: &mut A, b: &mut B) -> std::io::Result<(u64, u64)>
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + ?Sized,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + ?Sized,
{
    const BUFFER: usize = 64 * 1024;
    tokio::io::copy_bidirectional_with_sizes(a, b, BUFFER, BUFFER).await
}

/// The relay binary when none is configured: rdev itself when the running program is
/// `rdev`, else `rdev-sandbox-relay` (or `rdev`) next to the running program or one
/// directory up (a test binary in `target/debug/deps` finds `target/debug`'s).
pub fn default_program() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    if exe.file_name() == Some(OsStr::new("rdev")) {
        return Some(exe);
    }
    let dirs = [exe.parent(), exe.parent().and_then(Path::parent)];
    let found = dirs.into_iter().flatten().find_map(|dir| {
        ["rdev-sandbox-relay", "rdev"]
            .iter()
            .map(|name| dir.join(name))
            .find(|p| p.is_file())
    });
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_round_trip_and_bad_ones_are_refused() {
        let relay = RelayArgs {
            tcp: vec![(
                "127.0.0.1:17700".parse().unwrap(),
                "/run/rdev/gw.sock".into(),
            )],
            unix: vec![(
                "/run/rdev/io/a.sock".into(),
                "127.0.0.1:4096".parse().unwrap(),
            )],
            command: vec!["claude".into(), "-p".into(), "--".into()],
        };
        assert_eq!(parse(relay.to_args()).unwrap(), relay);
        let bad = |v: &[&str]| parse(v.iter().map(OsString::from)).unwrap_err();
        assert!(bad(&["--tcp", "x=y", "--", "a"]).contains("--tcp"));
        assert!(bad(&["--tcp"]).contains("needs a value"));
        assert!(bad(&["--bogus"]).contains("unexpected"));
        assert!(bad(&["--"]).contains("nothing to run"));
    }

    #[tokio::test]
    async fn forwards_a_loopback_port_to_a_unix_socket_and_back() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("gw.sock");
        let server = UnixListener::bind(&outside).unwrap();
        tokio::spawn(async move {
            // A gateway's side: the relay hands the TCP connection over.
            while let Ok((unix, _)) = server.accept().await {
                let super::super::handoff::First::HandedOff(fd) =
                    super::super::handoff::receive_first(&unix).await.unwrap()
                else {
                    panic!("a hand-off")
                };
                let mut s = super::super::handoff::into_tcp(fd).unwrap();
                let mut buf = [0u8; 5];
                s.read_exact(&mut buf).await.unwrap();
                s.write_all(&buf.to_ascii_uppercase()).await.unwrap();
            }
        });
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let back = dir.path().join("back.sock");
        let relay = RelayArgs {
            tcp: vec![(addr, outside)],
            unix: vec![(back.clone(), addr)],
            // The child runs long enough for the checks, then its status is the relay's.
            command: vec!["sh".into(), "-c".into(), "sleep 1; exit 3".into()],
        };
        let running = tokio::spawn(run(relay));
        // Through the Unix socket the relay made, to its own TCP port, to the server.
        let mut s = loop {
            if let Ok(s) = UnixStream::connect(&back).await {
                break s;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        s.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"HELLO");
        assert_eq!(running.await.unwrap().unwrap(), 3);
    }
}
