//! The model credentials of agents whose calls go through rdev's model gateway (Claude
//! Code run locally, OpenCode's `anthropic` provider): the agents hold a per-attempt token,
//! so what counts is the key of the gateway's first upstream, from `[[gateway.upstreams]]`
//! (`api_key_env`, or `api_key_secret` in the credential store) or the default upstream
//! derived from the agents' configuration and rdev's environment
//! ([`Config::derived_upstream`]). Decided from configuration alone, like the rest of
//! [`super`]; whether a stored key exists is `rdev doctor`'s `gateway keys` check.

use rdev_core::SecretString;

use super::{
    Credential, CredentialKind, Credentials, ModelApi, ModelEndpoint, NotConfigured, ANTHROPIC_API,
};
use crate::config::{Config, UpstreamAuth};

/// How to give the gateway a key, for every message that lacks one.
const FIX: &str =
    "for Anthropic's API set RDEV_AGENTS__CLAUDE_CODE__ENV__ANTHROPIC_API_KEY=<key>; \
     for a compatible endpoint set RDEV_AGENTS__CLAUDE_CODE__ENV__ANTHROPIC_BASE_URL=<url> and \
     RDEV_AGENTS__CLAUDE_CODE__ENV__ANTHROPIC_AUTH_TOKEN=<token> (or the same names under \
     [agents.claude_code.env] or [agents.opencode.server.env] in rdev.toml); or configure \
     [[gateway.upstreams]] with api_key_env, or api_key_secret and `rdev secret set gateway \
     NAME` (docs/gateway.md); then run `rdev doctor`";

fn kind(auth: UpstreamAuth) -> CredentialKind {
    match auth {
        UpstreamAuth::ApiKey => CredentialKind::ApiKey,
        UpstreamAuth::Bearer => CredentialKind::Bearer,
    }
}

/// `base` as a Messages API base URL with its version segment (`…/v1`).
fn versioned(base: &str) -> String {
    let base = base.trim_end_matches('/');
    let base = base.strip_suffix("/v1").unwrap_or(base);
    format!("{base}/v1")
}

/// The credentials `provider`'s model calls go upstream with. `model`: the model the
/// provider is configured to use, for the endpoint probe.
pub(super) fn upstream(
    config: &Config,
    lookup: &dyn Fn(&str) -> Option<String>,
    provider: &str,
    model: Option<String>,
) -> Credentials {
    if config.gateway.upstreams.is_empty() {
        derived(config, lookup, provider, model)
    } else {
        configured(config, lookup, provider, model)
    }
}

fn configured(
    config: &Config,
    lookup: &dyn Fn(&str) -> Option<String>,
    provider: &str,
    model: Option<String>,
) -> Credentials {
    let settings = match config.gateway_settings_from(|k| lookup(k).filter(|v| !v.is_empty())) {
        Ok(s) => s,
        Err(e) => {
            return Credentials::Missing(NotConfigured {
                provider: provider.to_owned(),
                missing: format!("rdev's model gateway would not start: {e}"),
                fix: FIX.to_owned(),
            })
        }
    };
    // Every call tries the first upstream first: its key is the one that has to work.
    let Some((u, config_u)) = settings
        .upstreams
        .first()
        .zip(config.gateway.upstreams.first())
    else {
        return Credentials::Elsewhere("no gateway upstream".into());
    };
    let endpoint = |credential| ModelEndpoint {
        api: ModelApi::Anthropic,
        base_url: versioned(u.base_url.as_str()),
        credential,
        model: model.clone(),
        source: format!("gateway upstream {}", u.name),
    };
    if let Some(secret) = &u.api_key_secret {
        return Credentials::Stored {
            endpoint: endpoint(None),
            secret: secret.clone(),
        };
    }
    let credential = u.api_key.clone().map(|value| Credential {
        kind: kind(u.auth),
        name: config_u.api_key_env.clone().unwrap_or_default(),
        value,
    });
    Credentials::Found(endpoint(credential))
}

fn derived(
    config: &Config,
    lookup: &dyn Fn(&str) -> Option<String>,
    provider: &str,
    model: Option<String>,
) -> Credentials {
    let found = config.derived_upstream(&|k| lookup(k));
    let base = found.base_url.as_ref();
    if let Some(key) = found.key {
        return Credentials::Found(ModelEndpoint {
            api: ModelApi::Anthropic,
            base_url: versioned(base.map_or(ANTHROPIC_API, |(b, _)| b.as_str())),
            credential: Some(Credential {
                kind: kind(key.auth),
                name: key.var.to_owned(),
                value: key.value,
            }),
            model,
            source: key.source.to_owned(),
        });
    }
    let mut missing = "neither ANTHROPIC_API_KEY nor ANTHROPIC_AUTH_TOKEN is set in \
                       agents.claude_code.env, agents.opencode.server.env or rdev's \
                       environment, where rdev's model gateway takes the upstream key from \
                       (agents get a token for each attempt, never the key)"
        .to_owned();
    if let Some((_, source)) = base {
        missing.push_str(&format!(
            " (ANTHROPIC_BASE_URL is set in {source}, but an endpoint needs a key or token too)"
        ));
    }
    let unused: Vec<&str> = [
        "CLAUDE_CODE_OAUTH_TOKEN",
        "CLAUDE_CODE_USE_BEDROCK",
        "CLAUDE_CODE_USE_VERTEX",
    ]
    .into_iter()
    .filter(|n| {
        config
            .agents
            .claude_code
            .env
            .get(*n)
            .map(SecretString::expose)
            .map(str::to_owned)
            .or_else(|| lookup(n))
            .is_some_and(|v| !v.trim().is_empty())
    })
    .collect();
    if !unused.is_empty() {
        missing.push_str(&format!(
            " ({} is set, but agents reach the model only through the gateway, which sends \
             an API key or token to an Anthropic-style endpoint)",
            unused.join(", ")
        ));
    }
    Credentials::Missing(NotConfigured {
        provider: provider.to_owned(),
        missing,
        fix: FIX.to_owned(),
    })
}

/// OpenCode's provider whose endpoint and key are always the gateway's (rdev sets them
/// over whatever the OpenCode configuration says).
pub(super) const OPENCODE_PROVIDER: &str = "anthropic";

#[cfg(test)]
mod tests {
    use rdev_core::AgentProvider;

    use super::{
        super::tests::{env, found, missing, set},
        *,
    };
    use crate::config::UpstreamConfig;

    #[test]
    fn configured_upstreams_decide_and_the_agents_env_does_not() {
        let mut c = Config::default();
        c.gateway.upstreams = vec![UpstreamConfig {
            name: "primary".into(),
            base_url: "https://llm.example".into(),
            api_key_env: Some("PRIMARY_KEY".into()),
            api_key_secret: None,
            auth: UpstreamAuth::Bearer,
        }];
        set(
            &mut c.agents.claude_code.env,
            "ANTHROPIC_API_KEY",
            "agents-key",
        );
        let e = missing(upstream(&c, &env(&[]), AgentProvider::CLAUDE_CODE, None));
        assert!(e.missing.contains("PRIMARY_KEY is not set"), "{e}");
        assert!(!e.to_string().contains("agents-key"), "{e}");
        let e = found(upstream(
            &c,
            &env(&[("PRIMARY_KEY", "k1")]),
            AgentProvider::CLAUDE_CODE,
            None,
        ));
        let cred = e.credential.unwrap();
        assert_eq!(
            (
                e.base_url.as_str(),
                cred.name.as_str(),
                cred.kind,
                cred.value.expose()
            ),
            (
                "https://llm.example/v1",
                "PRIMARY_KEY",
                CredentialKind::Bearer,
                "k1"
            )
        );
        assert_eq!(e.source, "gateway upstream primary");

        c.gateway.upstreams[0].api_key_env = None;
        c.gateway.upstreams[0].api_key_secret = Some("PRIMARY".into());
        match upstream(&c, &env(&[]), AgentProvider::OPENCODE, Some("m".into())) {
            Credentials::Stored { endpoint, secret } => {
                assert_eq!(secret.as_str(), "PRIMARY");
                assert_eq!(endpoint.model.as_deref(), Some("m"));
            }
            other => panic!("a stored key, got {other:?}"),
        }
    }

    #[test]
    fn the_default_upstream_is_found_where_the_gateway_finds_it() {
        let mut c = Config::default();
        set(
            &mut c.agents.opencode.server.env,
            "ANTHROPIC_BASE_URL",
            "https://llm.example/v1/",
        );
        set(
            &mut c.agents.opencode.server.env,
            "ANTHROPIC_AUTH_TOKEN",
            "tok",
        );
        let e = found(upstream(&c, &env(&[]), AgentProvider::CLAUDE_CODE, None));
        assert_eq!(e.base_url, "https://llm.example/v1");
        assert_eq!(e.source, "agents.opencode.server.env");
        assert_eq!(e.credential.unwrap().kind, CredentialKind::Bearer);

        // A subscription token or a cloud switch does not reach the model through the
        // gateway: named in the message, with the fix.
        let c = Config::default();
        let e = missing(upstream(
            &c,
            &env(&[("CLAUDE_CODE_OAUTH_TOKEN", "o")]),
            AgentProvider::CLAUDE_CODE,
            None,
        ));
        assert!(e.missing.contains("CLAUDE_CODE_OAUTH_TOKEN is set"), "{e}");
        assert!(e.fix.contains("api_key_secret"), "{e}");
    }
}
