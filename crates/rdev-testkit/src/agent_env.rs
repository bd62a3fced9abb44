//! The environments the real agent CLIs run in under test, pointed at a
//! [`ScriptedModel`](crate::ScriptedModel): the variables that send Claude Code to the
//! scripted model, and the OpenCode configuration file and offline environment (see
//! docs/scripted-model.md and docs/opencode.md for why each is set). Values only: it starts
//! nothing, and knows nothing of the adapters' configuration types.

use std::{collections::BTreeMap, path::Path};

use rdev_core::SecretString;

/// The API key tests give an agent when the model does not check it.
pub const TEST_API_KEY: &str = "test-key-not-real";

/// The variables that send the real `claude` CLI to the model at `base_url` with `api_key`,
/// with no retries (a scripted error must surface at once, not after the CLI's backoff).
pub fn claude_env(base_url: &str, api_key: &str) -> BTreeMap<String, SecretString> {
    BTreeMap::from([
        ("ANTHROPIC_BASE_URL".to_owned(), SecretString::new(base_url)),
        ("ANTHROPIC_API_KEY".to_owned(), SecretString::new(api_key)),
        ("CLAUDE_CODE_MAX_RETRIES".to_owned(), SecretString::new("0")),
    ])
}

/// `env` as the body of a TOML table (`KEY = "value"` lines), for `rdev.toml` files.
pub fn env_toml(env: &BTreeMap<String, SecretString>) -> String {
    env.iter()
        .map(|(k, v)| format!("{k} = {:?}\n", v.expose()))
        .collect()
}

/// The OpenCode configuration that sends every model call to `base_url` (the scripted
/// model's root; the provider gets `/v1`) with `api_key`, and allows edits and shell.
pub fn opencode_config_json(base_url: &str, api_key: &str) -> serde_json::Value {
    serde_json::json!({
        "model": "anthropic/claude-sonnet-4-5",
        "small_model": "anthropic/claude-haiku-4-5",
        "autoupdate": false,
        "share": "disabled",
        "provider": {"anthropic": {"options": {
            "baseURL": format!("{base_url}/v1"),
            "apiKey": api_key
        }}},
        "permission": {"edit": "allow", "bash": "allow"}
    })
}

/// Writes [`opencode_config_json`] to `path`.
pub fn write_opencode_config(path: &Path, base_url: &str, api_key: &str) {
    let config = opencode_config_json(base_url, api_key);
    let bytes = serde_json::to_vec_pretty(&config).expect("a JSON value serialises");
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// The environment that keeps `opencode serve` offline: no models.dev fetch, update check,
/// default plugins or LSP downloads, and its background npm install of the plugin package
/// sent to a dead loopback registry in offline mode.
pub fn opencode_offline_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("OPENCODE_DISABLE_MODELS_FETCH", "1"),
        ("OPENCODE_DISABLE_AUTOUPDATE", "1"),
        ("OPENCODE_DISABLE_DEFAULT_PLUGINS", "1"),
        ("OPENCODE_DISABLE_LSP_DOWNLOAD", "1"),
        ("npm_config_registry", "http://127.0.0.1:9/"),
        ("npm_config_offline", "true"),
    ]
}
