//! [`Injection`]: what a build receives from the credential store (the agent's variables,
//! git's token variables) and everything else the build must never show or commit, with
//! the redactor covering all of it. It holds values; it must not log or format them
//! (`Debug` names variables only).

use std::fmt;

use rdev_core::{Redactor, SecretString};

/// The secrets a build receives, ready for the agent and git, and the redactor that must
/// filter everything the build emits.
#[derive(Clone)]
pub struct Injection {
    /// `(variable, value)` for the agent's environment.
    pub env: Vec<(String, SecretString)>,
    /// `GIT_CONFIG_*` variables carrying the git token (empty without one).
    pub git_env: Vec<(String, String)>,
    /// Replaces every injected value and its encodings.
    pub redactor: Redactor,
    /// Every value handed out with the name it goes by (the variable, or `git token`): the
    /// values `redactor` covers, for push protection to look for by name.
    known: Vec<(String, SecretString)>,
}

impl Injection {
    /// An injection of `env` and `git_env`, where `known` names every value handed out.
    pub(super) fn new(
        env: Vec<(String, SecretString)>,
        git_env: Vec<(String, String)>,
        known: Vec<(String, SecretString)>,
    ) -> Self {
        let redactor = Redactor::new(known.iter().map(|(_, v)| v.expose()));
        Self {
            env,
            git_env,
            redactor,
            known,
        }
    }

    /// The same, also covering `value` (handed to the build by other means, such as the
    /// attempt's gateway token) under `name`: redacted, and refused in a commit.
    pub fn with_value(&self, name: &str, value: SecretString) -> Self {
        let mut known = self.known.clone();
        known.push((name.to_owned(), value));
        Self::new(self.env.clone(), self.git_env.clone(), known)
    }

    /// `(name, value)` for every value handed to the build: environment values under
    /// their variable's name, the git token and the header that carries it as `git token`.
    pub fn known_values(&self) -> impl Iterator<Item = (&str, &str)> {
        self.known.iter().map(|(k, v)| (k.as_str(), v.expose()))
    }
}

impl fmt::Debug for Injection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        let git: Vec<&str> = self.git_env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("Injection")
            .field("env", &env)
            .field("git_env", &git)
            .field("redactor", &self.redactor)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_added_later_is_known_and_redacted_and_debug_shows_no_value() {
        let base = Injection::new(
            vec![("API".into(), SecretString::new("api-value-1"))],
            vec![],
            vec![("API".into(), SecretString::new("api-value-1"))],
        );
        let more = base.with_value("gateway token", SecretString::new("rdev-gw-abc123"));
        let known: Vec<(&str, &str)> = more.known_values().collect();
        assert_eq!(
            known,
            [("API", "api-value-1"), ("gateway token", "rdev-gw-abc123")]
        );
        assert!(!more.redactor.redact("k=rdev-gw-abc123").contains("abc123"));
        assert_eq!(base.known_values().count(), 1, "the original is unchanged");
        assert!(!format!("{more:?}").contains("rdev-gw-abc123"));
    }
}
