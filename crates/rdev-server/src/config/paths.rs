//! Every path in the configuration made absolute once, at load, against the directory rdev
//! was started in, and logged once at start-up. rdev runs git, agents and sandboxes with
//! other working directories, so a relative path (the default `data_dir` is `data`) would
//! otherwise mean something different to each of them, and a repository URL stored for a
//! project would depend on where the next rdev starts. It only rewrites values; it creates
//! nothing.

use std::{
    fmt::Display,
    path::{Component, Path, PathBuf},
};

use rdev_agents::claude_code::TransportConfig;

use super::Config;

impl Config {
    /// Makes every configured path absolute against `base`: `data_dir`, `git_root`,
    /// `template_dirs`, a `sqlite:` database path, the agents' binaries (when they name a
    /// path rather than a command looked up on `PATH`), state and config locations, and
    /// the sandbox's paths. Absolute values are kept, so calling it again is harmless.
    pub fn resolve_paths(&mut self, base: &Path) {
        let abs = |p: &mut PathBuf| *p = absolute(base, p);
        let command = |p: &mut PathBuf| *p = absolute_command(base, p);
        abs(&mut self.data_dir);
        self.master_key_file.iter_mut().for_each(abs);
        self.git_root.iter_mut().for_each(abs);
        self.template_dirs.iter_mut().for_each(abs);
        self.database_url = absolute_sqlite_url(base, &self.database_url);

        let agents = &mut self.agents;
        agents.bwrap_bin.iter_mut().for_each(command);
        agents.sandbox_read_only.iter_mut().for_each(abs);
        let claude = &mut agents.claude_code;
        match &mut claude.transport {
            // With kubectl the CLI's path is one inside the pod, not on this machine.
            TransportConfig::Kubectl(k) => command(&mut k.kubectl_bin),
            TransportConfig::Local => claude.bin.iter_mut().for_each(command),
        }
        claude.config_root.iter_mut().for_each(abs);
        let opencode = &mut agents.opencode;
        opencode.bin.iter_mut().for_each(command);
        opencode.server.state_dir.iter_mut().for_each(abs);
        opencode.server.config_file.iter_mut().for_each(abs);
        self.gateway.relay_bin.iter_mut().for_each(command);
    }

    /// Sets `database_url` from a command-line flag, a `sqlite:` path made absolute against
    /// the current directory like every configured path.
    pub fn set_database_url(&mut self, url: String) {
        self.database_url = match std::env::current_dir() {
            Ok(cwd) => absolute_sqlite_url(&cwd, &url),
            Err(_) => url,
        };
    }

    /// Logs, once at start-up, where rdev keeps and finds things (`master_key`: where the
    /// credential store's key came from).
    pub fn log_paths(&self, master_key: &dyn Display) {
        let agents = &self.agents;
        tracing::info!(
            data_dir = %self.data_dir.display(),
            git_root = %self.git_root().display(),
            database = %rdev_store::db::redact_url(&self.database_url),
            template_dirs = ?self.template_dirs,
            master_key = %master_key,
            claude_bin = %agents.claude_code.resolve_bin().display(),
            claude_config_root = %agents.claude_code.resolve_config_root().display(),
            opencode_bin = %agents.opencode.resolve_bin().display(),
            opencode_state_dir = %agents.opencode.resolve_state_dir().display(),
            "paths"
        );
    }
}

/// `path` against `base` when relative (`.` components dropped); empty stays empty.
pub(super) fn absolute(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() || path.as_os_str().is_empty() {
        return path.to_owned();
    }
    let mut out = base.to_path_buf();
    out.extend(path.components().filter(|c| *c != Component::CurDir));
    out
}

/// A program to run: a bare name (`bwrap`) is looked up on `PATH` and stays as it is; one
/// with a `/` is a path and is made absolute.
fn absolute_command(base: &Path, program: &Path) -> PathBuf {
    if program.components().count() > 1 {
        absolute(base, program)
    } else {
        program.to_owned()
    }
}

/// A `sqlite:` URL with its file path made absolute (query kept); any other URL, an
/// in-memory database and an absolute path are returned unchanged. Characters the URL
/// parser treats specially are percent-encoded in the prefix added.
fn absolute_sqlite_url(base: &Path, url: &str) -> String {
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return url.to_owned();
    };
    let (file, query) = match rest.split_once('?') {
        Some((f, q)) => (f, Some(q)),
        None => (rest, None),
    };
    if file.is_empty() || file == ":memory:" || file.starts_with('/') {
        return url.to_owned();
    }
    let base = base
        .to_string_lossy()
        .replace('%', "%25")
        .replace('?', "%3F")
        .replace('#', "%23");
    let file = file.strip_prefix("./").unwrap_or(file);
    let mut out = format!("sqlite:{}/{file}", base.trim_end_matches('/'));
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_paths_are_made_absolute_against_the_start_directory() {
        let base = Path::new("/srv/rdev");
        let mut c = Config {
            data_dir: "./data".into(),
            git_root: Some("repos".into()),
            template_dirs: vec!["tpl".into(), "/abs/tpl".into()],
            ..Config::default()
        };
        c.agents.bwrap_bin = Some("bwrap".into());
        c.agents.sandbox_read_only = vec!["opt/cli".into()];
        c.agents.claude_code.bin = Some(".tools/node_modules/.bin/claude".into());
        c.agents.claude_code.config_root = Some("state/claude".into());
        c.agents.opencode.bin = Some("opencode".into());
        c.agents.opencode.server.state_dir = Some("state/oc".into());
        c.agents.opencode.server.config_file = Some("opencode.json".into());
        c.resolve_paths(base);
        assert_eq!(c.data_dir, Path::new("/srv/rdev/data"));
        assert_eq!(c.git_root(), Path::new("/srv/rdev/repos"));
        assert_eq!(
            c.template_dirs,
            [Path::new("/srv/rdev/tpl"), Path::new("/abs/tpl")]
        );
        assert_eq!(c.database_url, "sqlite:/srv/rdev/rdev.db");
        assert_eq!(c.agents.bwrap_bin.as_deref(), Some(Path::new("bwrap")));
        assert_eq!(c.agents.sandbox_read_only, [Path::new("/srv/rdev/opt/cli")]);
        let cc = &c.agents.claude_code;
        assert_eq!(
            cc.bin.as_deref(),
            Some(Path::new("/srv/rdev/.tools/node_modules/.bin/claude"))
        );
        assert_eq!(
            cc.config_root.as_deref(),
            Some(Path::new("/srv/rdev/state/claude"))
        );
        let oc = &c.agents.opencode;
        assert_eq!(oc.bin.as_deref(), Some(Path::new("opencode")));
        assert_eq!(
            oc.server.state_dir.as_deref(),
            Some(Path::new("/srv/rdev/state/oc"))
        );
        assert_eq!(
            oc.server.config_file.as_deref(),
            Some(Path::new("/srv/rdev/opencode.json"))
        );

        let again = c.clone();
        c.resolve_paths(Path::new("/elsewhere"));
        assert_eq!(c.data_dir, again.data_dir, "absolute values are kept");
        assert_eq!(c.database_url, again.database_url);
    }

    #[test]
    fn config_git_root_defaults_below_the_absolute_data_dir() {
        let mut c = Config::default();
        c.resolve_paths(Path::new("/srv/rdev"));
        assert_eq!(c.git_root(), Path::new("/srv/rdev/data/repos"));
    }

    #[test]
    fn config_sqlite_urls_keep_their_query_and_other_urls_are_untouched() {
        let base = Path::new("/b");
        for (url, want) in [
            ("sqlite:rdev.db", "sqlite:/b/rdev.db"),
            ("sqlite://x/y.db?mode=rwc", "sqlite:/b/x/y.db?mode=rwc"),
            ("sqlite:./z.db", "sqlite:/b/z.db"),
            ("sqlite:/abs.db", "sqlite:/abs.db"),
            ("sqlite:///abs.db", "sqlite:///abs.db"),
            ("sqlite::memory:", "sqlite::memory:"),
            ("postgres://u:p@h/db", "postgres://u:p@h/db"),
        ] {
            assert_eq!(absolute_sqlite_url(base, url), want, "{url}");
        }
        assert_eq!(
            absolute_sqlite_url(Path::new("/we?ird#50%"), "sqlite:a.db"),
            "sqlite:/we%3Fird%2350%25/a.db"
        );
    }

    #[test]
    fn config_kubectl_transport_keeps_the_in_pod_binary() {
        let mut c = Config::default();
        c.agents.claude_code.transport =
            TransportConfig::Kubectl(rdev_agents::claude_code::KubectlConfig {
                kubectl_bin: "bin/kubectl".into(),
                pod: "p".into(),
                namespace: None,
                container: None,
                gateway_url: None,
            });
        c.agents.claude_code.bin = Some("opt/claude".into());
        c.resolve_paths(Path::new("/b"));
        assert_eq!(
            c.agents.claude_code.bin.as_deref(),
            Some(Path::new("opt/claude"))
        );
        let TransportConfig::Kubectl(k) = &c.agents.claude_code.transport else {
            unreachable!()
        };
        assert_eq!(k.kubectl_bin, Path::new("/b/bin/kubectl"));
    }
}
