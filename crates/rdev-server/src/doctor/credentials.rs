//! Where each provider's model credentials come from, decided from configuration and rdev's
//! own environment alone (no network call), so the API can refuse a build on a provider
//! that has none before anything is queued. [`model_credentials`] is the one lookup: the
//! API, the worker, `GET /agents`, `/readyz` and `rdev doctor` all ask it, so pointing it
//! somewhere else (a model gateway's upstream settings) changes every answer at once.
//!
//! Agents whose model calls go through rdev's gateway (Claude Code run locally, OpenCode's
//! `anthropic` provider) hold a per-attempt token, not a key: for them it reads the
//! gateway's upstreams ([`gateway`]). Otherwise it reads what the adapters would hand the
//! agent: the pod's `agents.claude_code.env` for Claude Code over kubectl; OpenCode's server
//! configuration (`server.config_content` / `server.config_file`), `server.env` over its
//! inherited variables, and the server's own `auth.json` for its other providers. It never
//! logs or returns a value except inside a [`SecretString`].

mod gateway;
mod opencode;

use std::collections::BTreeMap;

use rdev_agents::{claude_code::TransportConfig, env::pattern_matches};
use rdev_core::{AgentProvider, ErrorCode, SecretName, SecretString};

use crate::config::Config;

/// The error code of a build refused, or failed, because its provider has no credentials.
pub const NOT_CONFIGURED: &str = "agent_not_configured";

/// Anthropic's API, the default endpoint of Claude Code and OpenCode's `anthropic`.
pub const ANTHROPIC_API: &str = "https://api.anthropic.com";

/// A provider that cannot call a model: what is missing and how to set it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("provider {provider} is not configured: {missing}; {fix}")]
pub struct NotConfigured {
    /// The provider id.
    pub provider: String,
    /// What is missing, naming the settings that were looked at.
    pub missing: String,
    /// How to set it.
    pub fix: String,
}

impl ErrorCode for NotConfigured {
    fn code(&self) -> &'static str {
        NOT_CONFIGURED
    }
}

/// The wire protocol of a model endpoint, which decides how `rdev doctor` probes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelApi {
    /// Anthropic's Messages API (`x-api-key` or bearer, `/v1/messages/count_tokens`).
    Anthropic,
    /// An OpenAI-style API (bearer, `GET /models`).
    OpenAi,
    /// Anything else: not probed.
    Other,
}

/// How a credential is presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// An API key (`x-api-key` for Anthropic, bearer for OpenAI-style APIs).
    ApiKey,
    /// A bearer token (`ANTHROPIC_AUTH_TOKEN`).
    Bearer,
    /// A subscription OAuth token; not probed.
    OAuth,
}

/// One credential and the name it was found under.
#[derive(Debug, Clone)]
pub struct Credential {
    pub kind: CredentialKind,
    /// The variable or setting, e.g. `ANTHROPIC_API_KEY`.
    pub name: String,
    pub value: SecretString,
}

/// A model endpoint rdev can see the credentials of.
#[derive(Debug, Clone)]
pub struct ModelEndpoint {
    pub api: ModelApi,
    /// Base URL including the API version segment, e.g. `https://api.anthropic.com/v1`.
    pub base_url: String,
    /// `None`: an endpoint declared without a key (a local model server).
    pub credential: Option<Credential>,
    /// The model the provider is configured to use, when known.
    pub model: Option<String>,
    /// Where the credential was found, e.g. `agents.claude_code.env`.
    pub source: String,
}

/// What [`model_credentials`] found for one provider.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A credential (or a keyless endpoint) rdev can see.
    Found(ModelEndpoint),
    /// A key in the credential store (`gateway` scope), read by the model gateway when it
    /// forwards; `endpoint` has no credential. `rdev doctor` checks that the secret exists.
    Stored {
        endpoint: ModelEndpoint,
        secret: SecretName,
    },
    /// Held where rdev cannot look (a pod, an external server, a cloud provider's own
    /// credentials); taken as configured. The text says where.
    Elsewhere(String),
    /// None at all.
    Missing(NotConfigured),
}

/// The model credentials provider `id` would run with. Providers rdev has no adapter
/// configuration for (a test's own agent) have nothing to check.
pub fn model_credentials(config: &Config, id: &str) -> Credentials {
    model_credentials_in(config, id, &|name| std::env::var(name).ok())
}

/// [`model_credentials`] with rdev's environment given by `lookup` (tests).
pub fn model_credentials_in(
    config: &Config,
    id: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Credentials {
    match id {
        AgentProvider::CLAUDE_CODE => claude_code(config, lookup),
        AgentProvider::OPENCODE => opencode::credentials(config, lookup),
        _ => Credentials::Elsewhere("no model credentials to check for this provider".into()),
    }
}

/// `Err` when provider `id` has no model credentials at all (what the API and the worker
/// refuse with `agent_not_configured`).
pub fn check_configured(config: &Config, id: &str) -> Result<(), NotConfigured> {
    match model_credentials(config, id) {
        Credentials::Missing(e) => Err(e),
        Credentials::Found(_) | Credentials::Stored { .. } | Credentials::Elsewhere(_) => Ok(()),
    }
}

/// A variable's value and where it came from; empty values count as unset.
type EnvView = BTreeMap<String, (SecretString, &'static str)>;

/// What an agent process would see: the variables of rdev's environment that `patterns`
/// pass through (only those named in `wanted`), overlaid with `configured`.
fn env_view(
    patterns: &[String],
    configured: &BTreeMap<String, SecretString>,
    configured_source: &'static str,
    wanted: &[&str],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> EnvView {
    let mut view = EnvView::new();
    for name in wanted {
        if pattern_matches(patterns, name) {
            if let Some(v) = lookup(name).filter(|v| !v.trim().is_empty()) {
                view.insert(
                    (*name).to_owned(),
                    (SecretString::new(v), "rdev's environment"),
                );
            }
        }
    }
    for (name, value) in configured {
        if value.expose().trim().is_empty() {
            view.remove(name);
        } else {
            view.insert(name.clone(), (value.clone(), configured_source));
        }
    }
    view
}

/// The Claude Code CLI's credential variables, in the order the CLI prefers them.
const CLAUDE_CREDENTIALS: [(&str, CredentialKind); 3] = [
    ("ANTHROPIC_API_KEY", CredentialKind::ApiKey),
    ("ANTHROPIC_AUTH_TOKEN", CredentialKind::Bearer),
    ("CLAUDE_CODE_OAUTH_TOKEN", CredentialKind::OAuth),
];
/// Switches that make the CLI use a cloud provider's own credentials instead.
const CLAUDE_CLOUD: [&str; 2] = ["CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX"];

fn claude_code(config: &Config, lookup: &dyn Fn(&str) -> Option<String>) -> Credentials {
    let cc = &config.agents.claude_code;
    if cc.transport == TransportConfig::Local {
        let model = env_view(
            &cc.inherit_env,
            &cc.env,
            "agents.claude_code.env",
            &["ANTHROPIC_MODEL"],
            lookup,
        )
        .remove("ANTHROPIC_MODEL")
        .map(|(v, _)| v.expose().to_owned());
        return gateway::upstream(config, lookup, AgentProvider::CLAUDE_CODE, model);
    }
    // kubectl: the pod's CLI gets `agents.claude_code.env` (rdev's inherited variables go
    // to kubectl itself), and calls the model from the pod, not through the gateway.
    let wanted: Vec<&str> = CLAUDE_CREDENTIALS
        .iter()
        .map(|(n, _)| *n)
        .chain(CLAUDE_CLOUD)
        .chain(["ANTHROPIC_BASE_URL", "ANTHROPIC_MODEL"])
        .collect();
    let env = env_view(&[], &cc.env, "agents.claude_code.env", &wanted, lookup);
    if let Some(switch) = CLAUDE_CLOUD.iter().find(|n| env.contains_key(**n)) {
        return Credentials::Elsewhere(format!(
            "{switch} is set: Claude Code uses the cloud provider's own credentials"
        ));
    }
    let found = CLAUDE_CREDENTIALS
        .iter()
        .find_map(|(name, kind)| env.get(*name).map(|v| (*name, *kind, v)));
    let Some((name, kind, (value, source))) = found else {
        return Credentials::Elsewhere(
            "kubectl transport: the pod's own environment may hold the credentials, which \
             rdev cannot see from here"
                .into(),
        );
    };
    let base_url = env
        .get("ANTHROPIC_BASE_URL")
        .map_or(ANTHROPIC_API, |(v, _)| v.expose());
    Credentials::Found(ModelEndpoint {
        api: ModelApi::Anthropic,
        base_url: format!("{}/v1", base_url.trim_end_matches('/')),
        credential: Some(Credential {
            kind,
            name: name.to_owned(),
            value: value.clone(),
        }),
        model: env
            .get("ANTHROPIC_MODEL")
            .map(|(v, _)| v.expose().to_owned()),
        source: (*source).to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rdev_agents::claude_code::KubectlConfig;

    use super::*;

    pub(super) fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn claude(config: &Config, pairs: &[(&str, &str)]) -> Credentials {
        model_credentials_in(config, AgentProvider::CLAUDE_CODE, &env(pairs))
    }

    pub(super) fn found(c: Credentials) -> ModelEndpoint {
        match c {
            Credentials::Found(e) => e,
            other => panic!("expected credentials, got {other:?}"),
        }
    }

    pub(super) fn missing(c: Credentials) -> NotConfigured {
        match c {
            Credentials::Missing(e) => e,
            other => panic!("expected none, got {other:?}"),
        }
    }

    pub(super) fn set(map: &mut BTreeMap<String, SecretString>, k: &str, v: &str) {
        map.insert(k.to_owned(), SecretString::new(v));
    }

    #[test]
    fn claude_code_reads_its_env_table_over_the_inherited_variables() {
        let mut c = Config::default();
        let e = found(claude(&c, &[("ANTHROPIC_API_KEY", "inherited")]));
        assert_eq!(e.base_url, "https://api.anthropic.com/v1");
        assert_eq!(e.source, "rdev's environment");
        let cred = e.credential.unwrap();
        assert_eq!(
            (cred.kind, cred.value.expose()),
            (CredentialKind::ApiKey, "inherited")
        );

        set(
            &mut c.agents.claude_code.env,
            "ANTHROPIC_BASE_URL",
            "http://proxy:8/",
        );
        set(&mut c.agents.claude_code.env, "ANTHROPIC_AUTH_TOKEN", "tok");
        let e = found(claude(&c, &[]));
        assert_eq!(e.base_url, "http://proxy:8/v1");
        assert_eq!(e.source, "agents.claude_code.env");
        assert_eq!(e.credential.unwrap().kind, CredentialKind::Bearer);

        // An empty configured value hides an inherited one: the CLI would get it empty.
        set(&mut c.agents.claude_code.env, "ANTHROPIC_AUTH_TOKEN", " ");
        let e = missing(claude(&c, &[("ANTHROPIC_AUTH_TOKEN", "x")]));
        assert!(e.missing.contains("ANTHROPIC_BASE_URL is set"), "{e}");
        assert_eq!(e.code(), NOT_CONFIGURED);
    }

    #[test]
    fn claude_code_run_locally_needs_the_gateways_key_and_over_kubectl_its_pods() {
        // Agents get a token, not a key: what `inherit_env` passes to them does not matter,
        // the gateway reads rdev's environment itself.
        let mut c = Config::default();
        c.agents.claude_code.inherit_env = vec!["PATH".into()];
        let e = found(claude(&c, &[("ANTHROPIC_API_KEY", "k")]));
        assert_eq!(e.source, "rdev's environment");
        let e = missing(claude(&c, &[]));
        assert!(
            e.fix
                .contains("RDEV_AGENTS__CLAUDE_CODE__ENV__ANTHROPIC_API_KEY=<key>"),
            "{e}"
        );

        // A subscription token or a cloud switch never reaches the model through the
        // gateway: no credentials, and the message says why.
        for (var, value) in [
            ("CLAUDE_CODE_OAUTH_TOKEN", "oauth-token-value"),
            ("CLAUDE_CODE_USE_BEDROCK", "1"),
        ] {
            let e = missing(claude(&Config::default(), &[(var, value)]));
            assert!(e.missing.contains(&format!("{var} is set")), "{e}");
            assert!(!e.to_string().contains("oauth-token-value"), "{e}");
        }

        // Over kubectl the pod calls the model itself, with its own environment.
        c.agents.claude_code.transport = TransportConfig::Kubectl(KubectlConfig {
            kubectl_bin: "/usr/bin/kubectl".into(),
            pod: "agent".into(),
            namespace: None,
            container: None,
            gateway_url: None,
        });
        assert!(matches!(claude(&c, &[]), Credentials::Elsewhere(_)));
        set(&mut c.agents.claude_code.env, "ANTHROPIC_AUTH_TOKEN", "pod");
        let e = found(claude(
            &c,
            &[("ANTHROPIC_API_KEY", "not-passed-to-the-pod")],
        ));
        assert_eq!(e.credential.unwrap().kind, CredentialKind::Bearer);
        set(
            &mut c.agents.claude_code.env,
            "CLAUDE_CODE_USE_BEDROCK",
            "1",
        );
        assert!(matches!(claude(&c, &[]), Credentials::Elsewhere(_)));
    }
}
