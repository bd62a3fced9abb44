//! The bubblewrap argument list: which namespaces a sandbox gets and which host paths it
//! sees (system directories, a few `/etc` entries, the agent CLI's install, the adapter's
//! [`Mounts`], the relay's binary and sockets). Pure functions from settings to argv, so
//! tests can read exactly what a sandbox mounts.
//!
//! This module starts nothing and checks nothing (that is [`super::Sandbox`]); it must not
//! add a mount that is not on the allow-list described in the parent module.

use std::{
    ffi::{OsStr, OsString},
    path::{Path, PathBuf},
};

use super::{Mounts, Relay, Scratch, GATEWAY_SOCKET, RELAY_IO_DIR, RELAY_PATH, SANDBOX_HOME};

/// System directories mounted read-only when they are directories on the host; when they
/// are symlinks (merged `/usr`), the same symlink is made inside.
const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];

/// `/etc` entries a CLI needs: TLS roots, name resolution, user names.
const ETC_ENTRIES: &[&str] = &[
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/localtime",
    "/etc/alternatives",
];

/// What a relay needs: a network namespace of its own (loopback only), its binary, the
/// gateway's socket and its socket directory.
pub(super) fn relay_args(relay: &Relay) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "--unshare-net".into(),
        "--ro-bind".into(),
        relay.bin.clone().into_os_string(),
        RELAY_PATH.into(),
        "--bind".into(),
        relay.gateway_socket.clone().into_os_string(),
        GATEWAY_SOCKET.into(),
    ];
    if let Some(dir) = &relay.io_dir {
        args.extend([
            "--bind".into(),
            dir.clone().into_os_string(),
            RELAY_IO_DIR.into(),
        ]);
    }
    args
}

pub(super) fn namespace_args() -> Vec<OsString> {
    [
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--hostname",
        "rdev-sandbox",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
    ]
    .into_iter()
    .map(OsString::from)
    .collect()
}

pub(super) fn system_args() -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    for dir in SYSTEM_DIRS {
        let path = Path::new(dir);
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(path) {
                    args.extend(["--symlink".into(), target.into_os_string(), (*dir).into()]);
                }
            }
            Ok(m) if m.is_dir() => args.extend(["--ro-bind".into(), (*dir).into(), (*dir).into()]),
            _ => {}
        }
    }
    args
}

/// The full bwrap argument list before `--` (a pure function, so tests can read it).
pub fn bwrap_args(
    program: &Path,
    mounts: &Mounts,
    scratch: &Scratch,
    extra_read_only: &[PathBuf],
) -> Vec<OsString> {
    let mut args = namespace_args();
    args.extend(system_args());
    for entry in ETC_ENTRIES {
        args.extend(["--ro-bind-try".into(), (*entry).into(), (*entry).into()]);
    }
    args.extend(
        ["--proc", "/proc", "--dev", "/dev"]
            .into_iter()
            .map(OsString::from),
    );
    let bind = |args: &mut Vec<OsString>, flag: &str, from: &Path, to: &OsStr| {
        args.extend([flag.into(), from.as_os_str().to_owned(), to.to_owned()]);
    };
    bind(&mut args, "--bind", &scratch.tmp(), OsStr::new("/tmp"));
    bind(
        &mut args,
        "--bind",
        &scratch.home(),
        OsStr::new(SANDBOX_HOME),
    );
    for path in install_dirs(program).iter().chain(extra_read_only) {
        bind(&mut args, "--ro-bind", path, path.as_os_str());
    }
    for path in &mounts.writable {
        bind(&mut args, "--bind", path, path.as_os_str());
    }
    for path in &mounts.read_only {
        bind(&mut args, "--ro-bind", path, path.as_os_str());
    }
    args.extend(["--chdir".into(), mounts.chdir.as_os_str().to_owned()]);
    args
}

/// What must be visible for `program` to run: nothing under `/usr`; for a CLI installed by
/// npm (`…/node_modules/.bin/claude`), that `node_modules` tree (the bin is a symlink into
/// it); otherwise the directory holding the resolved binary.
fn install_dirs(program: &Path) -> Vec<PathBuf> {
    let resolved = std::fs::canonicalize(program).unwrap_or_else(|_| program.to_path_buf());
    let mut dirs = Vec::new();
    for path in [program, resolved.as_path()] {
        if !path.is_absolute() || path.starts_with("/usr") {
            continue;
        }
        let node_modules = path
            .ancestors()
            .find(|a| a.file_name() == Some(OsStr::new("node_modules")));
        let dir = match node_modules {
            Some(nm) => nm.to_path_buf(),
            None => match path.parent() {
                Some(p) => p.to_path_buf(),
                None => continue,
            },
        };
        if !dirs.iter().any(|d: &PathBuf| dir.starts_with(d)) {
            dirs.retain(|d: &PathBuf| !d.starts_with(&dir));
            dirs.push(dir);
        }
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[OsString]) -> Vec<String> {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn mounts_an_allow_list_with_read_only_paths_on_top() {
        let scratch = Scratch::new().unwrap();
        let mounts = Mounts {
            writable: vec!["/data/work/t1".into()],
            read_only: vec!["/data/gitdirs/t1".into()],
            chdir: "/data/work/t1".into(),
        };
        let args = strings(&bwrap_args(
            Path::new("/opt/x/node_modules/.bin/claude"),
            &mounts,
            &scratch,
            &[],
        ));
        let joined = args.join(" ");
        for flag in [
            "--unshare-user",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--die-with-parent",
            "--new-session",
            "--cap-drop ALL",
            "--proc /proc",
            "--ro-bind /opt/x/node_modules /opt/x/node_modules",
            "--bind /data/work/t1 /data/work/t1",
            "--ro-bind /data/gitdirs/t1 /data/gitdirs/t1",
            "--chdir /data/work/t1",
        ] {
            assert!(joined.contains(flag), "{flag} missing from {joined}");
        }
        assert!(!joined.contains("--bind / /") && !joined.contains("--ro-bind / /"));
        assert!(
            !joined.contains("--unshare-net"),
            "only a sandbox with a relay to the gateway gets a network of its own"
        );
        let pos = |s: &str| args.iter().position(|a| a == s).unwrap();
        assert!(pos("/data/gitdirs/t1") > pos("/data/work/t1"));
    }

    #[test]
    fn install_dir_is_the_node_modules_tree_or_the_binary_dir() {
        assert_eq!(
            install_dirs(Path::new("/nonexistent/.tools/node_modules/.bin/claude")),
            vec![PathBuf::from("/nonexistent/.tools/node_modules")]
        );
        assert_eq!(
            install_dirs(Path::new("/nonexistent/bin/agent")),
            vec![PathBuf::from("/nonexistent/bin")]
        );
        assert!(install_dirs(Path::new("/usr/bin/claude")).is_empty());
    }
}
