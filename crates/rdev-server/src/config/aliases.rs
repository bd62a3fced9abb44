//! Short environment variables that set one nested key, read by [`super::Config::load`]
//! with the rest of the configuration (so no other part of rdev reads a setting from the
//! environment): `RDEV_CLAUDE_BIN`, `RDEV_OPENCODE_BIN` and `RDEV_OPENCODE_URL` override
//! the file and the `RDEV_AGENTS__...` form; OpenCode's own `OPENCODE_SERVER_PASSWORD` and
//! `OPENCODE_SERVER_USERNAME` only fill what configuration left unset. Empty values count
//! as unset. It must not read any other variable.

use figment::providers::Serialized;
use rdev_agents::{claude_code, opencode};
use serde_json::{Map, Value};

/// Whether a variable overrides configuration or only fills a gap in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Precedence {
    Override,
    Fallback,
}

/// Each alias, the key path it sets, and its precedence.
pub(super) const ALIASES: &[(&str, &[&str], Precedence)] = &[
    (
        claude_code::config::BIN_ENV,
        &["agents", "claude_code", "bin"],
        Precedence::Override,
    ),
    (
        opencode::config::BIN_ENV,
        &["agents", "opencode", "bin"],
        Precedence::Override,
    ),
    (
        opencode::config::URL_ENV,
        &["agents", "opencode", "url"],
        Precedence::Override,
    ),
    (
        opencode::config::PASSWORD_ENV,
        &["agents", "opencode", "password"],
        Precedence::Fallback,
    ),
    (
        opencode::config::USERNAME_ENV,
        &["agents", "opencode", "username"],
        Precedence::Fallback,
    ),
];

/// The aliases of `precedence` that `lookup` finds set, as a figment provider.
pub(super) fn provider(
    precedence: Precedence,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Serialized<Value> {
    let mut root = Map::new();
    for (name, path, p) in ALIASES {
        if *p != precedence {
            continue;
        }
        let Some(value) = lookup(name).filter(|v| !v.trim().is_empty()) else {
            continue;
        };
        let (leaf, parents) = path.split_last().expect("an alias names a key");
        let mut table = &mut root;
        for part in parents {
            table = table
                .entry(*part)
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .expect("alias paths only nest tables");
        }
        table.insert((*leaf).to_owned(), Value::String(value));
    }
    Serialized::defaults(Value::Object(root))
}

/// Whether `name` is one of the aliases (never warned about as an unknown `RDEV_*`).
pub(super) fn is_alias(name: &str) -> bool {
    ALIASES.iter().any(|(n, ..)| *n == name)
}

#[cfg(test)]
mod tests {
    use figment::{
        providers::{Format, Toml},
        Figment,
    };

    use super::*;
    use crate::config::Config;

    fn load(file: &str, env: &[(&str, &str)]) -> Config {
        let lookup = |k: &str| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        };
        Figment::new()
            .merge(Toml::string(file))
            .merge(provider(Precedence::Override, &lookup))
            .join(provider(Precedence::Fallback, &lookup))
            .extract()
            .unwrap()
    }

    #[test]
    fn binaries_and_url_override_the_file_and_credentials_only_fill_gaps() {
        let file = "[agents.opencode]\nbin = \"/file/opencode\"\npassword = \"from-file\"\n";
        let c = load(
            file,
            &[
                ("RDEV_CLAUDE_BIN", "/env/claude"),
                ("RDEV_OPENCODE_BIN", "/env/opencode"),
                ("RDEV_OPENCODE_URL", "http://127.0.0.1:4096"),
                ("OPENCODE_SERVER_PASSWORD", "from-env"),
                ("OPENCODE_SERVER_USERNAME", "user"),
            ],
        );
        let oc = &c.agents.opencode;
        assert_eq!(
            c.agents.claude_code.bin.as_deref(),
            Some("/env/claude".as_ref())
        );
        assert_eq!(oc.bin.as_deref(), Some("/env/opencode".as_ref()));
        assert_eq!(oc.url.as_deref(), Some("http://127.0.0.1:4096"));
        assert_eq!(oc.password.as_ref().unwrap().expose(), "from-file");
        assert_eq!(oc.username.as_deref(), Some("user"));
    }

    #[test]
    fn empty_values_are_unset() {
        let c = load(
            "",
            &[("RDEV_CLAUDE_BIN", " "), ("OPENCODE_SERVER_PASSWORD", "")],
        );
        assert!(c.agents.claude_code.bin.is_none());
        assert!(c.agents.opencode.password.is_none());
    }
}
