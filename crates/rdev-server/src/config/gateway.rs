//! `[gateway]`: rdev's model gateway (docs/gateway.md) — the upstreams model calls go to
//! and where their keys come from, the price table, the server-wide budget cap, failover
//! timing, the egress proxy's name overrides, and the relay binary sandboxes start. This
//! module describes and resolves settings (reading keys given by environment variable; a
//! key in the credential store is only named here, and read by the gateway when it
//! forwards); it starts nothing.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use rdev_core::{Budget, ModelPrice, PriceTable, SecretName, SecretString};
use serde::Deserialize;

use super::{Config, ConfigError};

/// Anthropic's public API, the upstream when nothing else is configured.
pub const DEFAULT_UPSTREAM_URL: &str = "https://api.anthropic.com";

/// `[gateway]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// The gateway's loopback TCP listener, for agents run with `agents.sandbox = "none"`
    /// (sandboxed agents reach it through a Unix socket). Port 0: any free port.
    pub listen: SocketAddr,
    /// Where model calls go, tried in order (failover). Empty: one upstream from
    /// `ANTHROPIC_BASE_URL`/`ANTHROPIC_API_KEY` in `[agents.claude_code] env` or rdev's
    /// environment (default base URL Anthropic's public API).
    pub upstreams: Vec<UpstreamConfig>,
    /// Prices per model (USD per million tokens), added to and overriding the built-in
    /// table (docs/gateway.md shows it with its date).
    pub prices: BTreeMap<String, ModelPrice>,
    /// The price of a model no entry matches (default: the most expensive built-in one).
    pub fallback_price: Option<ModelPrice>,
    /// The server-wide cap on what one task may spend, in dollars.
    pub max_cost_usd: Option<f64>,
    /// The server-wide cap on the tokens one task may use.
    pub max_tokens: Option<u64>,
    /// How long connecting to an upstream may take before the next one is tried.
    pub connect_timeout_secs: f64,
    /// How long a streaming call may wait for the upstream's response headers before the
    /// next upstream is tried (a non-streaming call waits up to ten minutes: the upstream
    /// answers only once the whole message is done).
    pub first_byte_timeout_secs: f64,
    /// The longest `retry-after` of a 429 that is waited for on the same upstream; a
    /// longer one moves on to the next upstream at once.
    pub retry_after_max_secs: f64,
    /// The binary sandboxes run as their network relay (`<bin> sandbox-relay ...`).
    /// Default: rdev itself, or `rdev-sandbox-relay` next to the running program.
    pub relay_bin: Option<PathBuf>,
    /// Fixed answers for the egress proxy's name lookups (`"mirror.internal" =
    /// "10.1.2.3"`), used instead of DNS.
    pub egress_hosts: BTreeMap<String, IpAddr>,
    /// Private, loopback or link-local addresses the egress proxy may connect to anyway
    /// (an internal package mirror); everything else in those ranges is refused.
    pub egress_allow_addresses: Vec<IpAddr>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            upstreams: Vec::new(),
            prices: BTreeMap::new(),
            fallback_price: None,
            max_cost_usd: None,
            max_tokens: None,
            connect_timeout_secs: 5.0,
            first_byte_timeout_secs: 60.0,
            retry_after_max_secs: 30.0,
            relay_bin: None,
            egress_hosts: BTreeMap::new(),
            egress_allow_addresses: Vec::new(),
        }
    }
}

/// `[[gateway.upstreams]]`: one place model calls may go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// A name for events and metrics (`primary`, `backup`).
    pub name: String,
    /// The Messages API base URL (`https://api.anthropic.com`).
    pub base_url: String,
    /// The environment variable of rdev's process holding this upstream's API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// The credential-store secret holding this upstream's API key, in the `gateway` scope
    /// (`rdev secret set gateway NAME`), which no build can read. Read when a call is
    /// forwarded, so a new version takes effect without a restart. Not with `api_key_env`.
    #[serde(default)]
    pub api_key_secret: Option<String>,
    /// How the key is sent: `api_key` (`x-api-key`, Anthropic's API) or `bearer`
    /// (`Authorization: Bearer`, what `ANTHROPIC_AUTH_TOKEN` means to Claude Code).
    #[serde(default)]
    pub auth: UpstreamAuth,
}

/// How an upstream's key is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamAuth {
    #[default]
    ApiKey,
    Bearer,
}

/// One upstream, resolved: a parsed URL and its key.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    pub base_url: url::Url,
    /// The key read from the environment. `None` and no `api_key_secret`: calls go
    /// without a key (a local model server that needs none).
    pub api_key: Option<SecretString>,
    /// The `gateway`-scope secret holding the key, read by the gateway when it forwards.
    pub api_key_secret: Option<SecretName>,
    pub auth: UpstreamAuth,
}

/// Everything the gateway runs with, resolved from [`Config`].
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    pub listen: SocketAddr,
    pub upstreams: Vec<Upstream>,
    pub prices: PriceTable,
    pub cap: Budget,
    pub connect_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub retry_after_max: Duration,
    pub relay_bin: Option<PathBuf>,
    pub egress_hosts: BTreeMap<String, IpAddr>,
    pub egress_allow_addresses: Vec<IpAddr>,
}

fn secs(what: &str, v: f64) -> Result<Duration, ConfigError> {
    Duration::try_from_secs_f64(v)
        .map_err(|_| ConfigError(format!("gateway.{what} must be a number of seconds")))
}

fn parse_url(name: &str, url: &str) -> Result<url::Url, ConfigError> {
    let parsed = url::Url::parse(url)
        .map_err(|e| ConfigError(format!("gateway upstream {name}: invalid base_url: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https")
        || !parsed.username().is_empty()
        || parsed.password().is_some()
    {
        return Err(ConfigError(format!(
            "gateway upstream {name}: base_url must be http(s) without credentials"
        )));
    }
    Ok(parsed)
}

/// Where the default upstream's settings were found, in the order they are looked up.
pub const DERIVED_SOURCES: [&str; 3] = [
    "agents.claude_code.env",
    "agents.opencode.server.env",
    "rdev's environment",
];

/// The one upstream used when none is configured, as found in the agents' configuration
/// and rdev's environment, with where each part came from.
#[derive(Debug, Clone, Default)]
pub struct DerivedUpstream {
    /// `ANTHROPIC_BASE_URL` as found (trailing `/v1` included), and where.
    pub base_url: Option<(String, &'static str)>,
    /// The key: `ANTHROPIC_API_KEY`, else `ANTHROPIC_AUTH_TOKEN` (sent as a bearer token).
    pub key: Option<DerivedKey>,
}

/// The default upstream's key and where it was found.
#[derive(Debug, Clone)]
pub struct DerivedKey {
    /// The variable it was found under.
    pub var: &'static str,
    pub value: SecretString,
    pub auth: UpstreamAuth,
    /// One of [`DERIVED_SOURCES`].
    pub source: &'static str,
}

/// An upstream's `api_key_secret`, checked: a secret name, not reserved, and not given
/// together with `api_key_env`.
fn upstream_secret(upstream: &str, name: &str, has_env: bool) -> Result<SecretName, ConfigError> {
    if has_env {
        return Err(ConfigError(format!(
            "gateway upstream {upstream}: give api_key_env or api_key_secret, not both"
        )));
    }
    SecretName::parse(name)
        .and_then(|n| n.check_not_reserved().map(|()| n))
        .map_err(|e| ConfigError(format!("gateway upstream {upstream}: api_key_secret: {e}")))
}

impl Config {
    /// The gateway's settings: `[gateway]` with its keys read from the environment, or,
    /// without `[[gateway.upstreams]]`, the one upstream the agents' configuration names:
    /// `ANTHROPIC_BASE_URL` and `ANTHROPIC_API_KEY` (or, sent as a bearer token,
    /// `ANTHROPIC_AUTH_TOKEN`) from `[agents.claude_code] env`, else
    /// `[agents.opencode.server] env`, else rdev's environment ([`Self::derived_upstream`]).
    /// A key variable that is named but unset is an error.
    pub fn gateway_settings(&self) -> Result<GatewaySettings, ConfigError> {
        self.gateway_settings_from(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// The default upstream's settings: each variable from `[agents.claude_code] env`, else
    /// `[agents.opencode.server] env`, else rdev's environment (through `env`). A blank
    /// value in a table hides the places after it, as it hid them from the agents.
    pub fn derived_upstream(&self, env: &impl Fn(&str) -> Option<String>) -> DerivedUpstream {
        let tables = [
            &self.agents.claude_code.env,
            &self.agents.opencode.server.env,
        ];
        let get = |name: &str| -> Option<(String, &'static str)> {
            for (table, source) in tables.iter().zip(DERIVED_SOURCES) {
                if let Some(v) = table.get(name) {
                    let v = v.expose().trim();
                    return (!v.is_empty()).then(|| (v.to_owned(), source));
                }
            }
            env(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .map(|v| (v, DERIVED_SOURCES[2]))
        };
        let key = [
            ("ANTHROPIC_API_KEY", UpstreamAuth::ApiKey),
            ("ANTHROPIC_AUTH_TOKEN", UpstreamAuth::Bearer),
        ]
        .into_iter()
        .find_map(|(var, auth)| {
            get(var).map(|(value, source)| DerivedKey {
                var,
                value: SecretString::new(value),
                auth,
                source,
            })
        });
        DerivedUpstream {
            base_url: get("ANTHROPIC_BASE_URL"),
            key,
        }
    }

    /// [`Self::gateway_settings`] with environment lookups through `env` (tests).
    pub fn gateway_settings_from(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<GatewaySettings, ConfigError> {
        let g = &self.gateway;
        let upstreams = if g.upstreams.is_empty() {
            let derived = self.derived_upstream(&env);
            // OpenCode's provider takes the API version in its base URL; the gateway adds
            // the request's own path.
            let base = derived
                .base_url
                .map(|(b, _)| b.trim_end_matches('/').trim_end_matches("/v1").to_owned())
                .unwrap_or_else(|| DEFAULT_UPSTREAM_URL.into());
            let (api_key, auth) = match derived.key {
                Some(k) => (Some(k.value), k.auth),
                None => (None, UpstreamAuth::ApiKey),
            };
            vec![Upstream {
                name: "default".into(),
                base_url: parse_url("default", &base)?,
                api_key,
                api_key_secret: None,
                auth,
            }]
        } else {
            let mut seen = std::collections::BTreeSet::new();
            g.upstreams
                .iter()
                .map(|u| {
                    if u.name.trim().is_empty() || !seen.insert(u.name.clone()) {
                        return Err(ConfigError(format!(
                            "gateway upstream names must be unique and not empty ({:?})",
                            u.name
                        )));
                    }
                    let api_key = match &u.api_key_env {
                        Some(var) => Some(env(var).map(SecretString::new).ok_or_else(|| {
                            ConfigError(format!(
                                "gateway upstream {}: api_key_env {var} is not set",
                                u.name
                            ))
                        })?),
                        None => None,
                    };
                    let api_key_secret = u
                        .api_key_secret
                        .as_deref()
                        .map(|n| upstream_secret(&u.name, n, api_key.is_some()))
                        .transpose()?;
                    Ok(Upstream {
                        name: u.name.clone(),
                        base_url: parse_url(&u.name, &u.base_url)?,
                        api_key,
                        api_key_secret,
                        auth: u.auth,
                    })
                })
                .collect::<Result<_, _>>()?
        };
        let mut prices = PriceTable::default();
        prices
            .models
            .extend(g.prices.iter().map(|(k, v)| (k.clone(), *v)));
        if let Some(f) = g.fallback_price {
            prices.fallback = f;
        }
        prices.validate().map_err(|e| ConfigError(e.to_string()))?;
        let cap = Budget {
            max_cost_usd: g.max_cost_usd,
            max_tokens: g.max_tokens,
        };
        cap.validate()
            .map_err(|e| ConfigError(format!("gateway: {e}")))?;
        if !g.listen.ip().is_loopback() {
            return Err(ConfigError(
                "gateway.listen must be a loopback address: its tokens are the only guard".into(),
            ));
        }
        Ok(GatewaySettings {
            listen: g.listen,
            upstreams,
            prices,
            cap,
            connect_timeout: secs("connect_timeout_secs", g.connect_timeout_secs)?,
            first_byte_timeout: secs("first_byte_timeout_secs", g.first_byte_timeout_secs)?,
            retry_after_max: secs("retry_after_max_secs", g.retry_after_max_secs)?,
            relay_bin: g.relay_bin.clone(),
            egress_hosts: g
                .egress_hosts
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), *v))
                .collect(),
            egress_allow_addresses: g.egress_allow_addresses.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_upstreams_the_claude_code_env_then_rdevs_env_names_the_one_upstream() {
        let mut c = Config::default();
        let s = c.gateway_settings_from(|_| None).unwrap();
        assert_eq!(s.upstreams.len(), 1);
        assert_eq!(
            s.upstreams[0].base_url.as_str(),
            "https://api.anthropic.com/"
        );
        assert!(s.upstreams[0].api_key.is_none());
        let env = |k: &str| match k {
            "ANTHROPIC_BASE_URL" => Some("http://127.0.0.1:9/".to_owned()),
            "ANTHROPIC_API_KEY" => Some("sk-env".to_owned()),
            _ => None,
        };
        let s = c.gateway_settings_from(env).unwrap();
        assert_eq!(s.upstreams[0].base_url.port(), Some(9));
        assert_eq!(s.upstreams[0].api_key.as_ref().unwrap().expose(), "sk-env");
        c.agents
            .claude_code
            .env
            .insert("ANTHROPIC_API_KEY".into(), SecretString::new("sk-config"));
        let s = c.gateway_settings_from(env).unwrap();
        assert_eq!(
            s.upstreams[0].api_key.as_ref().unwrap().expose(),
            "sk-config"
        );
        // An OpenCode-only set-up: its server env, its `/v1` base URL, a bearer token.
        let mut c = Config::default();
        let oc = &mut c.agents.opencode.server.env;
        oc.insert(
            "ANTHROPIC_BASE_URL".into(),
            SecretString::new("https://llm.example/v1/"),
        );
        oc.insert("ANTHROPIC_AUTH_TOKEN".into(), SecretString::new("tok"));
        let s = c.gateway_settings_from(|_| None).unwrap();
        assert_eq!(s.upstreams[0].base_url.as_str(), "https://llm.example/");
        assert_eq!(s.upstreams[0].auth, UpstreamAuth::Bearer);
        assert_eq!(s.upstreams[0].api_key.as_ref().unwrap().expose(), "tok");
    }

    #[test]
    fn configured_upstreams_read_their_keys_by_reference_and_fail_when_unset() {
        let mut c = Config::default();
        c.gateway.upstreams = vec![
            UpstreamConfig {
                name: "primary".into(),
                base_url: "https://a.example".into(),
                api_key_env: Some("KEY_A".into()),
                api_key_secret: None,
                auth: UpstreamAuth::ApiKey,
            },
            UpstreamConfig {
                name: "backup".into(),
                base_url: "http://127.0.0.1:8".into(),
                api_key_env: None,
                api_key_secret: None,
                auth: UpstreamAuth::Bearer,
            },
        ];
        let s = c
            .gateway_settings_from(|k| (k == "KEY_A").then(|| "sk-a".to_owned()))
            .unwrap();
        let names: Vec<&str> = s.upstreams.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["primary", "backup"]);
        let err = c.gateway_settings_from(|_| None).unwrap_err().to_string();
        assert!(err.contains("KEY_A is not set"), "{err}");
        c.gateway.upstreams[1].name = "primary".into();
        assert!(c.gateway_settings_from(|_| Some("k".into())).is_err());
    }

    #[test]
    fn an_upstream_key_may_be_a_gateway_secret_named_but_not_read_here() {
        let mut c = Config::default();
        let toml = r#"
            [[gateway.upstreams]]
            name = "primary"
            base_url = "https://a.example"
            api_key_secret = "ANTHROPIC_KEY"
        "#;
        c.gateway = toml::from_str::<toml::Table>(toml).unwrap()["gateway"]
            .clone()
            .try_into()
            .unwrap();
        let s = c.gateway_settings_from(|_| None).unwrap();
        let u = &s.upstreams[0];
        assert!(u.api_key.is_none());
        assert_eq!(u.api_key_secret.as_ref().unwrap().as_str(), "ANTHROPIC_KEY");
        let refused = |c: &Config| c.gateway_settings_from(|_| Some("k".into())).unwrap_err();
        c.gateway.upstreams[0].api_key_env = Some("KEY".into());
        assert!(
            refused(&c).to_string().contains("not both"),
            "{}",
            refused(&c)
        );
        c.gateway.upstreams[0].api_key_env = None;
        for bad in ["no-dashes", "RDEV_WEBHOOK_SECRET"] {
            c.gateway.upstreams[0].api_key_secret = Some(bad.into());
            assert!(refused(&c).to_string().contains("api_key_secret"), "{bad}");
        }
    }

    #[test]
    fn prices_extend_the_default_table_and_a_public_listener_is_refused() {
        let mut c = Config::default();
        c.gateway
            .prices
            .insert("my-model".into(), ModelPrice::anthropic(1.0, 2.0));
        let s = c.gateway_settings_from(|_| None).unwrap();
        assert_eq!(s.prices.price("my-model").0.output, 2.0);
        assert!(s.prices.price("claude-sonnet-4-5").1);
        c.gateway.listen = "0.0.0.0:0".parse().unwrap();
        assert!(c.gateway_settings_from(|_| None).is_err());
    }
}
