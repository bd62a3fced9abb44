//! The fence around the environment a project may give its agent: variable names that steer
//! rdev, the agent CLI's model endpoint and keys, its runtime, loader, shell, TLS trust or
//! proxies are refused, whatever secret they would carry. Checked when a project's secret
//! plan is created or changed, again when a build's secrets are injected, and by
//! `AgentRequest::validate` in every adapter, so a plan that got into the store some other
//! way still fails closed. It holds rules only; nothing here reads or sets a variable.

use super::SecretName;
use crate::ValidationError;

/// One rule of the fence: a name pattern and what a variable matching it steers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvRule {
    /// `NAME` (exact), `PREFIX*` or `*SUFFIX`, compared without regard to ASCII case (so
    /// `*_PROXY` also covers `http_proxy`).
    pub pattern: &'static str,
    /// What a variable matching it steers.
    pub why: &'static str,
}

const fn rule(pattern: &'static str, why: &'static str) -> EnvRule {
    EnvRule { pattern, why }
}

/// Every rule, in the order docs/secrets.md lists them.
pub const FENCED_ENV: &[EnvRule] = &[
    rule(
        "ANTHROPIC_*",
        "Claude Code's model endpoint, API key and model",
    ),
    rule(
        "CLAUDE_*",
        "Claude Code's settings: config directory, provider switches, limits",
    ),
    rule(
        "DISABLE_*",
        "Claude Code switches rdev sets: auto-updater, telemetry, error reports",
    ),
    rule("IS_SANDBOX", "lets Claude Code skip its permission checks"),
    rule(
        "OPENCODE_*",
        "OpenCode's settings and its server's credentials",
    ),
    rule("RDEV_*", "rdev's own settings and secrets"),
    rule("OTEL_*", "where the agent sends its telemetry"),
    rule("*_PROXY", "where the agent's HTTP traffic goes"),
    rule("SSL_*", "which TLS certificates the agent trusts"),
    rule(
        "NODE_*",
        "the Node.js runtime: NODE_OPTIONS preloads code, NODE_EXTRA_CA_CERTS changes TLS trust",
    ),
    rule("BUN_*", "the Bun runtime the agent CLIs are built on"),
    rule(
        "PYTHON*",
        "the Python runtime: PYTHONPATH, PYTHONSTARTUP, PYTHONHOME",
    ),
    rule("LD_*", "the dynamic loader: LD_PRELOAD, LD_LIBRARY_PATH"),
    rule(
        "GIT_*",
        "git: rdev's git credentials travel in GIT_CONFIG_*, GIT_DIR and GIT_SSH_COMMAND steer it",
    ),
    rule("PATH", "which programs run"),
    rule(
        "HOME",
        "where the agent keeps its configuration and credentials",
    ),
    rule(
        "XDG_*",
        "where the agent finds its configuration (OpenCode's is under XDG_CONFIG_HOME)",
    ),
    rule("TMPDIR", "the agent's scratch directory"),
    rule("KUBECONFIG", "which cluster kubectl talks to"),
    rule("SHELL", "the shell the agent runs its commands with"),
    rule("BASH_ENV", "a file bash runs before every command"),
    rule("ENV", "a file sh runs at start"),
    rule("SHELLOPTS", "options of every bash the agent starts"),
    rule("BASHOPTS", "options of every bash the agent starts"),
    rule("PS4", "code bash runs with tracing on"),
];

impl EnvRule {
    /// Whether `name` matches this rule (ASCII case ignored).
    pub fn matches(&self, name: &str) -> bool {
        let name = name.as_bytes();
        let pattern = self.pattern.as_bytes();
        match (pattern.strip_suffix(b"*"), pattern.strip_prefix(b"*")) {
            (Some(prefix), _) => {
                name.len() >= prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix)
            }
            (_, Some(suffix)) => {
                name.len() >= suffix.len()
                    && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
            _ => name.eq_ignore_ascii_case(pattern),
        }
    }
}

/// The first rule that fences `name`, if any.
pub fn fenced_by(name: &str) -> Option<&'static EnvRule> {
    FENCED_ENV.iter().find(|r| r.matches(name))
}

/// Checks that a project may set `name` in its agent's environment: a portable variable
/// name (`[A-Za-z_][A-Za-z0-9_]{0,127}`) that no rule of [`FENCED_ENV`] matches.
pub fn check_env_name(name: &str) -> Result<(), ValidationError> {
    SecretName::parse(name).map_err(|_| ValidationError::InvalidField {
        field: "environment variable",
        reason: format!(
            "{:?} is not a variable name (letters, digits and '_', not starting with a digit)",
            name.chars().take(80).collect::<String>()
        ),
    })?;
    match fenced_by(name) {
        Some(rule) => Err(ValidationError::ReservedEnvName {
            name: name.to_owned(),
            rule: rule.pattern,
            why: rule.why,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::ErrorCode;

    #[test]
    fn names_that_steer_the_agent_or_rdev_are_refused_naming_the_rule() {
        for (name, rule) in [
            ("ANTHROPIC_API_KEY", "ANTHROPIC_*"),
            ("ANTHROPIC_BASE_URL", "ANTHROPIC_*"),
            ("anthropic_base_url", "ANTHROPIC_*"),
            ("CLAUDE_CONFIG_DIR", "CLAUDE_*"),
            ("CLAUDE_CODE_USE_BEDROCK", "CLAUDE_*"),
            ("DISABLE_AUTOUPDATER", "DISABLE_*"),
            ("IS_SANDBOX", "IS_SANDBOX"),
            ("OPENCODE_SERVER_PASSWORD", "OPENCODE_*"),
            ("RDEV_API_TOKEN", "RDEV_*"),
            ("RDEV_MASTER_KEY", "RDEV_*"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_*"),
            ("HTTPS_PROXY", "*_PROXY"),
            ("https_proxy", "*_PROXY"),
            ("ALL_PROXY", "*_PROXY"),
            ("no_proxy", "*_PROXY"),
            ("SSL_CERT_FILE", "SSL_*"),
            ("NODE_OPTIONS", "NODE_*"),
            ("NODE_EXTRA_CA_CERTS", "NODE_*"),
            ("BUN_OPTIONS", "BUN_*"),
            ("PYTHONPATH", "PYTHON*"),
            ("LD_PRELOAD", "LD_*"),
            ("GIT_CONFIG_COUNT", "GIT_*"),
            ("GIT_SSH_COMMAND", "GIT_*"),
            ("PATH", "PATH"),
            ("Path", "PATH"),
            ("HOME", "HOME"),
            ("XDG_CONFIG_HOME", "XDG_*"),
            ("TMPDIR", "TMPDIR"),
            ("KUBECONFIG", "KUBECONFIG"),
            ("SHELL", "SHELL"),
            ("BASH_ENV", "BASH_ENV"),
            ("ENV", "ENV"),
            ("SHELLOPTS", "SHELLOPTS"),
            ("PS4", "PS4"),
        ] {
            let err = check_env_name(name).unwrap_err();
            assert_eq!(err.code(), "reserved_env_name", "{name}");
            assert_eq!(fenced_by(name).map(|r| r.pattern), Some(rule), "{name}");
            let msg = err.to_string();
            assert!(msg.contains(name) && msg.contains(rule), "{msg}");
        }
    }

    #[test]
    fn ordinary_project_variables_pass() {
        for name in [
            "DEPLOY_TOKEN",
            "NPM_TOKEN",
            "GITHUB_TOKEN",
            "AWS_ACCESS_KEY_ID",
            "STRIPE_SECRET_KEY",
            "PATHS",
            "MY_HOME",
            "ENVIRONMENT",
            "PROXY",
            "GITHUB_PROXY_URL",
            "_X",
        ] {
            assert_eq!(check_env_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn names_that_are_not_variable_names_are_invalid_fields() {
        for name in [
            "",
            "1A",
            "A-B",
            "A B",
            "A=B",
            "BASH_FUNC_x%%",
            &"A".repeat(129),
        ] {
            assert_eq!(
                check_env_name(name).unwrap_err().code(),
                "invalid_field",
                "{name:?}"
            );
        }
    }

    #[test]
    fn every_rule_is_exact_prefix_or_suffix() {
        for r in FENCED_ENV {
            let stars = r.pattern.matches('*').count();
            assert!(
                stars == 0
                    || (stars == 1 && (r.pattern.starts_with('*') || r.pattern.ends_with('*'))),
                "{r:?}"
            );
            assert_eq!(r.pattern, r.pattern.to_ascii_uppercase(), "{r:?}");
        }
    }

    proptest! {
        #[test]
        fn the_fence_ignores_ascii_case(name in "[A-Za-z_][A-Za-z0-9_]{0,30}") {
            prop_assert_eq!(
                fenced_by(&name).map(|r| r.pattern),
                fenced_by(&name.to_ascii_uppercase()).map(|r| r.pattern)
            );
        }
    }
}
