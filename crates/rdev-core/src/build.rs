//! [`BuildSpec`]: what a client asks rdev to build. Validation here covers what the domain
//! knows (prompt, timeout, provider id); the server checks the project, template and
//! callback URL, which need I/O or configuration.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{
    agent::{validate_prompt, validate_timeout},
    AgentProvider, RequestLimits, ValidationError,
};

/// A build request body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildSpec {
    /// The template to render when the repository is new.
    #[serde(default)]
    pub template: Option<String>,
    /// What the agent is asked to do.
    pub prompt: String,
    /// Template variables.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Commit, push and follow CI when the agent changed the tree.
    #[serde(default)]
    pub auto_deploy: bool,
    /// Where the signed result is POSTed.
    #[serde(default)]
    pub callback_url: Option<String>,
    /// The agent provider; `None` uses the project's, then the registry default.
    #[serde(default)]
    pub provider: Option<AgentProvider>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Resume this agent session.
    #[serde(default)]
    pub session_id: Option<String>,
}

impl BuildSpec {
    /// The default agent timeout when a spec names none: 30 minutes.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

    /// A spec with only a prompt.
    pub fn new(prompt: impl Into<String>) -> Self {
        Self {
            template: None,
            prompt: prompt.into(),
            variables: BTreeMap::new(),
            auto_deploy: false,
            callback_url: None,
            provider: None,
            model: None,
            timeout_secs: None,
            session_id: None,
        }
    }

    /// The timeout this spec asks for, or the default.
    pub fn timeout(&self) -> Duration {
        self.timeout_secs
            .map(Duration::from_secs)
            .unwrap_or(Self::DEFAULT_TIMEOUT)
    }

    /// Checks prompt, timeout and model against `limits`.
    pub fn validate(&self, limits: &RequestLimits) -> Result<(), ValidationError> {
        validate_prompt(&self.prompt, limits)?;
        validate_timeout(self.timeout(), limits)?;
        if let Some(model) = &self.model {
            if model.trim().is_empty() || model.len() > 200 {
                return Err(ValidationError::InvalidField {
                    field: "model",
                    reason: "must be 1 to 200 characters".into(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parses_the_documented_body() {
        let spec: BuildSpec = serde_json::from_str(
            r#"{"template":"astro-landing","prompt":"Make a landing page",
                "variables":{"title":"Hi"},"auto_deploy":true,
                "callback_url":"https://bot.example/cb","provider":"claude-code","timeout_secs":600}"#,
        )
        .unwrap();
        assert_eq!(spec.template.as_deref(), Some("astro-landing"));
        assert!(spec.auto_deploy);
        assert_eq!(spec.timeout(), Duration::from_secs(600));
        assert!(spec.validate(&RequestLimits::default()).is_ok());
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_str::<BuildSpec>(r#"{"prompt":"x","promt":"y"}"#).is_err());
    }

    #[test]
    fn spec_validation_reuses_request_rules() {
        let limits = RequestLimits::default();
        assert_eq!(
            BuildSpec::new("  ").validate(&limits),
            Err(ValidationError::PromptRequired)
        );
        let mut s = BuildSpec::new("x");
        s.timeout_secs = Some(0);
        assert!(matches!(
            s.validate(&limits),
            Err(ValidationError::InvalidTimeout { .. })
        ));
    }
}
