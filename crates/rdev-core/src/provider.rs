//! [`AgentProvider`]: the string id of a code agent implementation (`claude-code`,
//! `opencode`, ...). The registry is keyed by it; it must stay a short slug.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::ValidationError;

/// The id of a code-agent provider, a slug of 1..=32 chars from `[a-z0-9-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AgentProvider(String);

impl AgentProvider {
    /// Anthropic's Claude Code CLI.
    pub const CLAUDE_CODE: &'static str = "claude-code";
    /// The OpenCode server.
    pub const OPENCODE: &'static str = "opencode";

    /// Parses and validates a provider id.
    pub fn parse(id: &str) -> Result<Self, ValidationError> {
        let bad = |reason| ValidationError::InvalidProvider {
            id: id.to_owned(),
            reason,
        };
        if id.is_empty() || id.len() > 32 {
            return Err(bad("must be 1 to 32 characters"));
        }
        if !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(bad("only a-z, 0-9 and '-' are allowed"));
        }
        Ok(Self(id.to_owned()))
    }

    /// The Claude Code provider id.
    pub fn claude_code() -> Self {
        Self(Self::CLAUDE_CODE.to_owned())
    }

    /// The OpenCode provider id.
    pub fn opencode() -> Self {
        Self(Self::OPENCODE.to_owned())
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for AgentProvider {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for AgentProvider {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<AgentProvider> for String {
    fn from(p: AgentProvider) -> Self {
        p.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_ids_parse() {
        assert_eq!(
            AgentProvider::parse("claude-code").unwrap(),
            AgentProvider::claude_code()
        );
        assert_eq!(
            AgentProvider::parse("opencode").unwrap(),
            AgentProvider::opencode()
        );
    }

    #[test]
    fn bad_ids_are_rejected() {
        for id in ["", "Claude", "a b", "x/y", &"a".repeat(33)] {
            assert!(
                AgentProvider::parse(id).is_err(),
                "{id:?} should be rejected"
            );
        }
    }
}
