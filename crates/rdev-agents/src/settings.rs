//! Settings helpers both adapters' configurations share: durations written as seconds,
//! the default state directory below `$XDG_STATE_HOME/rdev`, and the CLIs that
//! `scripts/setup-tools` installs. It resolves paths only; it creates nothing.

use std::path::{Path, PathBuf};

/// `$XDG_STATE_HOME/rdev/<name>` (or `~/.local/state/rdev/<name>`; the temp dir's
/// `rdev-<name>` when neither is known).
pub fn state_dir(name: &str) -> PathBuf {
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/state")));
    match state {
        Some(s) => s.join("rdev").join(name),
        None => std::env::temp_dir().join(format!("rdev-{name}")),
    }
}

/// `<dir>/<relative>` (e.g. `.tools/node_modules/.bin/claude`) for the first `dir` among
/// the current directory, its ancestors and the running executable's ancestors that has it.
pub fn discover_setup_tools_bin(relative: &str) -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok();
    let exe = std::env::current_exe().ok();
    let roots = cwd.iter().chain(exe.iter()).flat_map(|p| p.ancestors());
    roots.map(|d| d.join(relative)).find(|p| p.is_file())
}

/// Durations written as (possibly fractional) seconds in configuration.
pub(crate) mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}
