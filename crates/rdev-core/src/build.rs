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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildSpec {
    /// The template to render when the repository is new (422 unknown_template for one
    /// the server does not have).
    #[serde(default)]
    pub template: Option<String>,
    /// What the agent is asked to do.
    #[schema(schema_with = crate::api_schema::default_prompt)]
    pub prompt: String,
    /// Template variables.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Commit, push and follow CI when the agent changed the tree.
    #[serde(default)]
    pub auto_deploy: bool,
    /// Where the signed result is POSTed: an absolute http(s) URL without credentials,
    /// to a public address unless the server allows private callbacks (422
    /// invalid_callback_url, invalid_callback_url_scheme, callback_url_has_credentials,
    /// private_callback_url).
    #[serde(default)]
    #[schema(format = "uri")]
    pub callback_url: Option<String>,
    /// The agent provider; `None` uses the project's, then the registry default.
    #[serde(default)]
    pub provider: Option<AgentProvider>,
    /// The model; it reaches the agent's command line, so it must pass
    /// [`validate_model`].
    #[serde(default)]
    #[schema(schema_with = crate::api_schema::model_field)]
    pub model: Option<String>,
    /// How long the agent may run, in seconds (default 1800; 422 invalid_timeout outside
    /// 1 to the server's maximum).
    #[serde(default, deserialize_with = "crate::json_int::opt")]
    #[schema(schema_with = crate::api_schema::default_timeout_secs)]
    pub timeout_secs: Option<u64>,
    /// Resume this agent session; it must pass [`validate_session_id`].
    #[serde(default)]
    #[schema(schema_with = crate::api_schema::session_id_field)]
    pub session_id: Option<String>,
    /// Most dollars the task's model calls may cost (all attempts together); the project's
    /// and the server's limits apply too, the smallest wins.
    #[serde(default)]
    #[schema(schema_with = crate::api_schema::max_cost_usd_field)]
    pub max_cost_usd: Option<f64>,
    /// Most tokens (input, output, cache reads and writes) the task's model calls may use.
    #[serde(default, deserialize_with = "crate::json_int::opt")]
    #[schema(schema_with = crate::api_schema::max_tokens_field)]
    pub max_tokens: Option<u64>,
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
            max_cost_usd: None,
            max_tokens: None,
        }
    }

    /// The budget this spec asks for.
    pub fn budget(&self) -> crate::Budget {
        crate::Budget {
            max_cost_usd: self.max_cost_usd,
            max_tokens: self.max_tokens,
        }
    }

    /// The timeout this spec asks for, or the default.
    pub fn timeout(&self) -> Duration {
        self.timeout_secs
            .map(Duration::from_secs)
            .unwrap_or(Self::DEFAULT_TIMEOUT)
    }

    /// The request's fingerprint, for `Idempotency-Key`: the SHA-256 (lowercase hex) of the
    /// spec as canonical JSON, with object keys sorted and null fields left out. Two bodies
    /// that parse to the same spec (whitespace, key order, an explicit `null` or default)
    /// have the same fingerprint, and a field added later as `None` does not change the
    /// fingerprint of specs that leave it out.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        // A spec always serialises: its maps have string keys and its one float is finite
        // once validated (a non-finite one serialises as null).
        let json = serde_json::to_value(self).map_or(serde_json::Value::Null, canonical);
        let digest = Sha256::digest(json.to_string().as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
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
        self.budget().validate()
    }
}

/// `v` with object keys in sorted order (whatever map type serde_json was built with) and
/// null members dropped, at every depth.
fn canonical(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let sorted: BTreeMap<String, Value> = map
                .into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, canonical(v)))
                .collect();
            Value::Object(sorted.into_iter().collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_ignores_layout_key_order_and_explicit_defaults() {
        let a: BuildSpec = serde_json::from_str(
            r#"{"prompt":"Add a FAQ","variables":{"b":"2","a":"1"},"auto_deploy":true}"#,
        )
        .unwrap();
        let b: BuildSpec = serde_json::from_str(
            r#"{ "auto_deploy" : true, "model": null, "variables": {"a":"1","b":"2"},
                 "prompt": "Add a FAQ", "template": null }"#,
        )
        .unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 64);
        let mut c = a.clone();
        c.prompt = "Add a blog".into();
        assert_ne!(a.fingerprint(), c.fingerprint());
        let mut d = a.clone();
        d.auto_deploy = false;
        assert_ne!(a.fingerprint(), d.fingerprint());
        let mut e = a.clone();
        e.variables.insert("c".into(), "3".into());
        assert_ne!(a.fingerprint(), e.fingerprint());
    }

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
    fn a_budget_in_the_spec_must_be_positive_and_parses_from_the_body() {
        use crate::ErrorCode;
        let limits = RequestLimits::default();
        let spec: BuildSpec =
            serde_json::from_str(r#"{"prompt":"x","max_cost_usd":0.5,"max_tokens":1000}"#).unwrap();
        assert_eq!(spec.budget().max_cost_usd, Some(0.5));
        assert_eq!(spec.budget().max_tokens, Some(1000));
        assert!(spec.validate(&limits).is_ok());
        let mut s = BuildSpec::new("x");
        s.max_cost_usd = Some(0.0);
        assert_eq!(s.validate(&limits).unwrap_err().code(), "invalid_field");
        let mut s = BuildSpec::new("x");
        s.max_tokens = Some(0);
        assert_eq!(s.validate(&limits).unwrap_err().code(), "invalid_field");
        // Specs without a budget keep the fingerprint they had before it existed.
        let plain: BuildSpec = serde_json::from_str(r#"{"prompt":"x"}"#).unwrap();
        assert_eq!(plain.fingerprint(), BuildSpec::new("x").fingerprint());
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
