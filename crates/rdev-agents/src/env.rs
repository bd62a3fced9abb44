//! Environment handling both adapters share: which variable names are valid, which of
//! rdev's own variables a CLI or server inherits (an allow-list, so rdev's secrets such as
//! `RDEV_MASTER_KEY` never reach an agent), and the default list. It never sets anything
//! itself; each adapter builds its child's environment.

use std::ffi::OsString;

/// Variables a CLI needs to run at all (paths, locale, proxies, CA bundles) plus the
/// CLI's own `ANTHROPIC_*`/`CLAUDE_CODE_*` settings and `KUBECONFIG` for kubectl.
pub const DEFAULT_INHERIT_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LC_*",
    "TERM",
    "TMPDIR",
    "TZ",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "NODE_EXTRA_CA_CERTS",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "KUBECONFIG",
    "ANTHROPIC_*",
    "CLAUDE_CODE_*",
];

/// Whether `name` is a portable environment variable name (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn is_valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    first_ok && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether `name` matches one of `patterns` (exact, or a prefix ending in `*`).
pub fn pattern_matches(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => p == name,
    })
}

/// rdev's own environment filtered by `patterns` (see [`pattern_matches`]).
pub fn inherited(patterns: &[String]) -> Vec<(OsString, OsString)> {
    std::env::vars_os()
        .filter(|(k, _)| k.to_str().is_some_and(|k| pattern_matches(patterns, k)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_patterns_match_exact_names_and_prefixes() {
        let p: Vec<String> = vec!["PATH".into(), "ANTHROPIC_*".into()];
        assert!(pattern_matches(&p, "PATH"));
        assert!(pattern_matches(&p, "ANTHROPIC_BASE_URL"));
        assert!(!pattern_matches(&p, "PATHX"));
        assert!(!pattern_matches(&p, "RDEV_MASTER_KEY"));
    }

    #[test]
    fn names_are_portable() {
        assert!(is_valid_name("_A1"));
        assert!(!is_valid_name("BAD-NAME"));
        assert!(!is_valid_name("1A"));
        assert!(!is_valid_name(""));
    }
}
