//! OpenCode's model credentials: for its `anthropic` provider, which rdev points at the
//! model gateway, the gateway's upstream key ([`super::gateway`]); for any other, the key
//! of the provider its model names, found in the supervised server's configuration
//! (`config_content` / `config_file`), its environment (`server.env` over what
//! `inherit_env` passes through), or its own `auth.json`. A server given by `url` keeps its
//! own settings and is not judged.

use rdev_agents::{env::pattern_matches, opencode::ModelRef};
use rdev_core::{AgentProvider, SecretString};
use serde_json::Value;

use super::{
    env_view, gateway, Credential, CredentialKind, Credentials, EnvView, ModelApi, ModelEndpoint,
    NotConfigured,
};
use crate::config::Config;

/// OpenCode's built-in providers rdev knows the key variables and endpoints of.
struct KnownProvider {
    id: &'static str,
    vars: &'static [&'static str],
    api: ModelApi,
    base_url: &'static str,
}

const OPENCODE_PROVIDERS: &[KnownProvider] = &[
    KnownProvider {
        id: "anthropic",
        vars: &["ANTHROPIC_API_KEY"],
        api: ModelApi::Anthropic,
        base_url: "https://api.anthropic.com/v1",
    },
    KnownProvider {
        id: "openai",
        vars: &["OPENAI_API_KEY"],
        api: ModelApi::OpenAi,
        base_url: "https://api.openai.com/v1",
    },
    KnownProvider {
        id: "openrouter",
        vars: &["OPENROUTER_API_KEY"],
        api: ModelApi::OpenAi,
        base_url: "https://openrouter.ai/api/v1",
    },
    KnownProvider {
        id: "groq",
        vars: &["GROQ_API_KEY"],
        api: ModelApi::OpenAi,
        base_url: "https://api.groq.com/openai/v1",
    },
    KnownProvider {
        id: "google",
        vars: &["GOOGLE_GENERATIVE_AI_API_KEY", "GEMINI_API_KEY"],
        api: ModelApi::Other,
        base_url: "https://generativelanguage.googleapis.com/v1beta",
    },
];

pub(super) fn credentials(config: &Config, lookup: &dyn Fn(&str) -> Option<String>) -> Credentials {
    let oc = &config.agents.opencode;
    if let Some(url) = &oc.url {
        return Credentials::Elsewhere(format!(
            "agents.opencode.url: the OpenCode server at {url} holds its own provider settings"
        ));
    }
    let server = &oc.server;
    let file = match opencode_file(oc) {
        Ok(v) => v,
        Err(reason) => return Credentials::Elsewhere(reason),
    };
    let wanted: Vec<&str> = OPENCODE_PROVIDERS
        .iter()
        .flat_map(|p| p.vars.iter().copied())
        .collect();
    let env = env_view(
        &server.inherit_env,
        &server.env,
        "agents.opencode.server.env",
        &wanted,
        lookup,
    );
    // What the server inherits from rdev's environment (for `{env:NAME}` in its config).
    let inherited = |name: &str| {
        lookup(name).filter(|v| !v.trim().is_empty() && pattern_matches(&server.inherit_env, name))
    };
    let model = oc
        .model
        .clone()
        .or_else(|| file["model"].as_str().map(str::to_owned));
    let chosen = model
        .as_deref()
        .and_then(|m| ModelRef::parse(m).ok())
        .map(|m| m.provider_id);
    let auth = opencode_auth(&oc.resolve_state_dir());
    let candidates: Vec<String> = match &chosen {
        Some(p) => vec![p.clone()],
        None => file["provider"]
            .as_object()
            .into_iter()
            .flat_map(|o| o.keys().cloned())
            .chain(OPENCODE_PROVIDERS.iter().map(|p| p.id.to_owned()))
            .collect(),
    };
    let model_id = model
        .as_deref()
        .and_then(|m| ModelRef::parse(m).ok())
        .map(|m| m.model_id);
    // The `anthropic` provider's endpoint and key are the gateway's, whatever the OpenCode
    // configuration says: its calls need the gateway's upstream key.
    let through_gateway =
        || gateway::upstream(config, lookup, AgentProvider::OPENCODE, model_id.clone());
    if chosen.as_deref() == Some(gateway::OPENCODE_PROVIDER) {
        return through_gateway();
    }
    for id in &candidates {
        if id == gateway::OPENCODE_PROVIDER {
            match through_gateway() {
                Credentials::Missing(_) => continue,
                found => return found,
            }
        }
        if let Some(found) = opencode_provider(id, &file, &env, &auth, &inherited) {
            return match found {
                Credentials::Found(mut e) => {
                    e.model = model_id;
                    Credentials::Found(e)
                }
                other => other,
            };
        }
    }
    let (missing, var) = match &chosen {
        Some(p) => {
            let var = OPENCODE_PROVIDERS
                .iter()
                .find(|k| k.id == p)
                .map_or("<PROVIDER>_API_KEY", |k| k.vars[0]);
            (
                format!(
                    "its model provider `{p}` has no key: no options.apiKey for it in the \
                     OpenCode configuration, {var} is neither in \
                     agents.opencode.server.env nor passed from rdev's environment, and the \
                     server's auth.json has no entry for it"
                ),
                var,
            )
        }
        None => (
            "no model provider has a key: no provider with options.apiKey in the OpenCode \
             configuration, none of ANTHROPIC_API_KEY, OPENAI_API_KEY, OPENROUTER_API_KEY, ... \
             in agents.opencode.server.env or passed from rdev's environment"
                .to_owned(),
            "ANTHROPIC_API_KEY",
        ),
    };
    Credentials::Missing(NotConfigured {
        provider: AgentProvider::OPENCODE.to_owned(),
        missing,
        fix: format!(
            "set RDEV_AGENTS__OPENCODE__SERVER__ENV__{var}=<key> (or [agents.opencode.server.env] \
             in rdev.toml), or give the provider's options.apiKey and options.baseURL in the \
             file named by agents.opencode.server.config_file; then run `rdev doctor`"
        ),
    })
}

/// The server's configuration JSON (`config_content` over `config_file`); `Null` when
/// there is none. `Err` says why it could not be read (then nothing is decided).
fn opencode_file(oc: &rdev_agents::opencode::OpenCodeConfig) -> Result<Value, String> {
    let (text, origin) = if let Some(content) = &oc.server.config_content {
        (
            content.expose().to_owned(),
            "agents.opencode.server.config_content".to_owned(),
        )
    } else if let Some(path) = &oc.server.config_file {
        match std::fs::read_to_string(path) {
            Ok(t) => (t, path.display().to_string()),
            Err(e) => {
                return Err(format!(
                    "cannot read agents.opencode.server.config_file {}: {e}",
                    path.display()
                ))
            }
        }
    } else {
        return Ok(Value::Null);
    };
    serde_json::from_str(&text).map_err(|e| {
        format!("{origin} is not plain JSON ({e}); its model credentials are not checked")
    })
}

/// Provider entries of the supervised server's `auth.json` (`opencode auth login`).
fn opencode_auth(state_dir: &std::path::Path) -> Value {
    std::fs::read_to_string(state_dir.join("data/opencode/auth.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null)
}

/// The credentials of OpenCode provider `id`, when it has any. `env` holds the server's
/// configured variables and the known key variables it inherits; `inherited` looks up any
/// other variable it inherits.
fn opencode_provider(
    id: &str,
    file: &Value,
    env: &EnvView,
    auth: &Value,
    inherited: &dyn Fn(&str) -> Option<String>,
) -> Option<Credentials> {
    let known = OPENCODE_PROVIDERS.iter().find(|k| k.id == id);
    let declared = &file["provider"][id];
    let options = &declared["options"];
    let npm = declared["npm"].as_str().unwrap_or_default();
    let api = match known {
        Some(k) => k.api,
        None if npm.contains("anthropic") => ModelApi::Anthropic,
        None if npm.contains("openai") => ModelApi::OpenAi,
        None => ModelApi::Other,
    };
    let base_url = options["baseURL"]
        .as_str()
        .map(|u| u.trim_end_matches('/').to_owned())
        .or_else(|| known.map(|k| k.base_url.to_owned()));
    let kind = if api == ModelApi::OpenAi {
        CredentialKind::Bearer
    } else {
        CredentialKind::ApiKey
    };
    let endpoint = |name: String, value: Option<SecretString>, source: &str| {
        Credentials::Found(ModelEndpoint {
            api: if base_url.is_some() {
                api
            } else {
                ModelApi::Other
            },
            base_url: base_url.clone().unwrap_or_default(),
            credential: value.map(|value| Credential { kind, name, value }),
            model: None,
            source: source.to_owned(),
        })
    };
    if let Some(key) = options["apiKey"].as_str().filter(|k| !k.trim().is_empty()) {
        // OpenCode substitutes `{env:NAME}` from the server's environment.
        let value = match key.strip_prefix("{env:").and_then(|k| k.strip_suffix('}')) {
            Some(var) => env
                .get(var)
                .map(|(v, _)| v.clone())
                .or_else(|| inherited(var).map(SecretString::new))?,
            None => SecretString::new(key),
        };
        return Some(endpoint(
            format!("provider.{id}.options.apiKey"),
            Some(value),
            "the OpenCode configuration",
        ));
    }
    if let Some((var, (value, source))) = known
        .into_iter()
        .flat_map(|k| k.vars.iter())
        .find_map(|v| env.get(*v).map(|found| (*v, found)))
    {
        return Some(endpoint(var.to_owned(), Some(value.clone()), source));
    }
    if let Value::Object(entry) = &auth[id] {
        let key = entry
            .get("key")
            .and_then(Value::as_str)
            .map(SecretString::new);
        return Some(match key {
            Some(k) => endpoint("auth.json".into(), Some(k), "the server's auth.json"),
            None => Credentials::Elsewhere(format!(
                "`{id}` is logged in through `opencode auth login` (the server's auth.json)"
            )),
        });
    }
    // A provider declared with its own endpoint and no key (a local model server).
    (options["baseURL"].is_string())
        .then(|| endpoint(String::new(), None, "the OpenCode configuration"))
}

#[cfg(test)]
mod tests {
    use super::{super::tests::*, *};
    use crate::doctor::credentials::model_credentials_in;

    fn opencode(config: &Config, pairs: &[(&str, &str)]) -> Credentials {
        model_credentials_in(config, AgentProvider::OPENCODE, &env(pairs))
    }

    #[test]
    fn opencode_reads_the_key_of_its_models_provider() {
        let mut c = Config::default();
        c.agents.opencode.server.state_dir = Some("/nonexistent/state".into());
        let content = |json: serde_json::Value| Some(SecretString::new(json.to_string()));
        // The `anthropic` provider's endpoint and key are the gateway's: a key in the
        // OpenCode configuration is not used, the gateway's upstream key is.
        c.agents.opencode.server.config_content = content(serde_json::json!({
            "model": "anthropic/claude-sonnet-4-5",
            "provider": {"anthropic": {"options": {"baseURL": "http://m:1/v1/", "apiKey": "k1"}}}
        }));
        let e = missing(opencode(&c, &[]));
        assert!(e.missing.contains("model gateway"), "{e}");
        set(&mut c.agents.opencode.server.env, "ANTHROPIC_API_KEY", "k0");
        let e = found(opencode(&c, &[]));
        assert_eq!(
            (e.api, e.base_url.as_str(), e.source.as_str()),
            (
                ModelApi::Anthropic,
                "https://api.anthropic.com/v1",
                "agents.opencode.server.env"
            )
        );
        assert_eq!(e.model.as_deref(), Some("claude-sonnet-4-5"));
        assert_eq!(e.credential.unwrap().value.expose(), "k0");

        // `{env:NAME}` is looked up where the server gets its environment.
        c.agents.opencode.server.config_content = content(serde_json::json!({
            "model": "openrouter/x/y",
            "provider": {"openrouter": {"options": {"apiKey": "{env:MY_KEY}"}}}
        }));
        missing(opencode(&c, &[("MY_KEY", "not-inherited")]));
        set(&mut c.agents.opencode.server.env, "MY_KEY", "k2");
        let e = found(opencode(&c, &[]));
        assert_eq!(e.credential.unwrap().value.expose(), "k2");
        assert_eq!(e.base_url, "https://openrouter.ai/api/v1");

        // OPENAI_API_KEY is not inherited by default; configured, it is found.
        c.agents.opencode.server.config_content = None;
        c.agents.opencode.model = Some("openai/gpt-5".into());
        let e = missing(opencode(&c, &[("OPENAI_API_KEY", "o")]));
        assert!(
            e.fix
                .contains("RDEV_AGENTS__OPENCODE__SERVER__ENV__OPENAI_API_KEY"),
            "{e}"
        );
        set(&mut c.agents.opencode.server.env, "OPENAI_API_KEY", "o");
        let e = found(opencode(&c, &[]));
        assert_eq!(e.api, ModelApi::OpenAi);
        assert_eq!(e.credential.unwrap().kind, CredentialKind::Bearer);
    }

    #[test]
    fn opencode_local_servers_auth_logins_and_unreadable_configs() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config::default();
        c.agents.opencode.server.state_dir = Some(dir.path().to_path_buf());
        c.agents.opencode.server.inherit_env = Vec::new();
        let e = missing(opencode(&c, &[]));
        assert!(e.missing.contains("no model provider has a key"), "{e}");

        c.agents.opencode.server.config_content = Some(SecretString::new(
            r#"{"model":"local/qwen","provider":{"local":{"npm":"@ai-sdk/openai-compatible","options":{"baseURL":"http://127.0.0.1:11434/v1"}}}}"#,
        ));
        let e = found(opencode(&c, &[]));
        assert!(e.credential.is_none());
        assert_eq!(e.api, ModelApi::OpenAi);

        c.agents.opencode.server.config_content = None;
        c.agents.opencode.model = Some("openrouter/x/y".into());
        std::fs::create_dir_all(dir.path().join("data/opencode")).unwrap();
        std::fs::write(
            dir.path().join("data/opencode/auth.json"),
            r#"{"openrouter":{"type":"api","key":"or-key"}}"#,
        )
        .unwrap();
        let e = found(opencode(&c, &[]));
        assert_eq!(e.base_url, "https://openrouter.ai/api/v1");
        assert_eq!(e.model.as_deref(), Some("x/y"));

        c.agents.opencode.server.config_content = Some(SecretString::new("{ // jsonc\n}"));
        assert!(matches!(opencode(&c, &[]), Credentials::Elsewhere(_)));
        c.agents.opencode.url = Some("http://127.0.0.1:4096".into());
        assert!(matches!(opencode(&c, &[]), Credentials::Elsewhere(_)));
        assert!(matches!(
            model_credentials_in(&c, "bench-instant", &env(&[])),
            Credentials::Elsewhere(_)
        ));
    }
}
