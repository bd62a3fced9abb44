//! [`BuildSpec`]: what a client asks rdev to build. Validation here covers what the domain
//! knows (prompt, timeout, provider id, model and session id); the server checks the
//! project, template and callback URL, which need I/O or configuration.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{
    agent::{validate_prompt, validate_timeout},
    agent_args::{validate_model, validate_session_id},
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
    /// The model; it reaches the agent's command line, so it must pass
    /// [`validate_model`].
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Resume this agent session; it must pass [`validate_session_id`].
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

    /// Checks prompt and timeout against `limits`, and the model and session id against
    /// the patterns that keep them from becoming options ([`crate::agent_args`]).
    pub fn validate(&self, limits: &RequestLimits) -> Result<(), ValidationError> {
        validate_prompt(&self.prompt, limits)?;
        validate_timeout(self.timeout(), limits)?;
        if let Some(model) = &self.model {
            validate_model(model)?;
        }
        if let Some(session) = &self.session_id {
            validate_session_id(session)?;
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

    #[test]
    fn option_like_model_and_session_id_are_refused_with_their_codes() {
        use crate::ErrorCode;
        let limits = RequestLimits::default();
        for bad in ["--add-dir=/", "-p", "--permission-mode=default", "", " "] {
            let mut s = BuildSpec::new("x");
            s.model = Some(bad.into());
            assert_eq!(s.validate(&limits).unwrap_err().code(), "invalid_model");
            let mut s = BuildSpec::new("x");
            s.session_id = Some(bad.into());
            assert_eq!(
                s.validate(&limits).unwrap_err().code(),
                "invalid_session_id"
            );
        }
        let mut s = BuildSpec::new("x");
        s.model = Some("anthropic/claude-sonnet-4-5".into());
        s.session_id = Some("ses_5ZbQ1xYz9AbC".into());
        assert_eq!(s.validate(&limits), Ok(()));
    }
}
