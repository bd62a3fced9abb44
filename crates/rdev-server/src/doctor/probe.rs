//! The checks that may call out: a provider's model credentials (found without a call, then
//! one cheap authenticated request to the configured endpoint) and Woodpecker with its
//! token. Answers are reduced to a status line; a credential never appears in one (URLs lose
//! their user info, response snippets are redacted).

use std::time::Duration;

use rdev_core::Redactor;
use reqwest::{StatusCode, Url};

use super::{
    credentials::{
        model_credentials, CredentialKind, Credentials, ModelApi, ModelEndpoint, NOT_CONFIGURED,
    },
    Check,
};
use crate::{config::Config, woodpecker::WoodpeckerClient};

/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);
/// The model named in a `count_tokens` probe when the configuration names none.
const PROBE_MODEL: &str = "claude-sonnet-4-5";
/// How much of an error body a line quotes.
const SNIPPET_CHARS: usize = 200;

/// `url` without user info, for messages.
fn shown(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.as_str().trim_end_matches('/').to_owned()
        }
        Err(_) => "(unparsable URL)".to_owned(),
    }
}

/// An error with its causes, `a: b: c` (reqwest's own text is only "error sending request").
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

/// Provider `id`'s credentials line, and the endpoint to probe when there is one.
pub(super) fn credentials(config: &Config, id: &str) -> (Option<ModelEndpoint>, Check) {
    let name = format!("{id} credentials");
    match model_credentials(config, id) {
        Credentials::Found(endpoint) => {
            let what = match &endpoint.credential {
                Some(c) => format!("{} from {}", c.name, endpoint.source),
                None => format!("no key needed (declared in {})", endpoint.source),
            };
            let at = if endpoint.base_url.is_empty() {
                String::new()
            } else {
                format!(" for {}", shown(&endpoint.base_url))
            };
            let model = endpoint
                .model
                .as_deref()
                .map(|m| format!(", model {m}"))
                .unwrap_or_default();
            let check = Check::ok(name, format!("{what}{at}{model}"));
            (Some(endpoint), check)
        }
        Credentials::Stored { endpoint, secret } => (
            None,
            Check::ok(
                name,
                format!(
                    "key from the credential store (gateway/{secret}, read by the model \
                     gateway when it forwards; see the gateway keys check) for {}",
                    shown(&endpoint.base_url)
                ),
            ),
        ),
        Credentials::Elsewhere(why) => (
            None,
            Check::warning(
                name,
                format!("not checked: {why}"),
                "make sure the agent gets model credentials there; a build shows the \
                 agent's own error otherwise",
            ),
        ),
        Credentials::Missing(e) => (
            None,
            Check::error(name, format!("{} ({NOT_CONFIGURED})", e.missing), e.fix),
        ),
    }
}

/// One cheap authenticated request to `endpoint`: Anthropic's `count_tokens` or an
/// OpenAI-style `GET /models`.
pub(super) async fn model_endpoint(id: &str, endpoint: &ModelEndpoint) -> Check {
    let name = format!("{id} endpoint");
    let credential = endpoint.credential.as_ref();
    if endpoint.api == ModelApi::Other || endpoint.base_url.is_empty() {
        return Check::ok(
            name,
            "not called: rdev only probes Anthropic- and OpenAI-style APIs",
        );
    }
    if credential.is_some_and(|c| c.kind == CredentialKind::OAuth) {
        return Check::ok(name, "not called: a subscription OAuth token is not probed");
    }
    let http = match reqwest::Client::builder()
        .timeout(PROBE_TIMEOUT)
        .user_agent(concat!("rdev-doctor/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(h) => h,
        Err(e) => {
            return Check::error(name, format!("no HTTP client: {e}"), "report this as a bug")
        }
    };
    let base = endpoint.base_url.trim_end_matches('/');
    let (request, what) = match endpoint.api {
        ModelApi::Anthropic => {
            let body = serde_json::json!({
                "model": endpoint.model.as_deref().unwrap_or(PROBE_MODEL),
                "messages": [{"role": "user", "content": "ping"}],
            });
            let mut r = http
                .post(format!("{base}/messages/count_tokens"))
                .header("anthropic-version", "2023-06-01")
                .json(&body);
            r = match credential {
                Some(c) if c.kind == CredentialKind::ApiKey => {
                    r.header("x-api-key", c.value.expose())
                }
                Some(c) => r.bearer_auth(c.value.expose()),
                None => r,
            };
            (r, format!("POST {}/messages/count_tokens", shown(base)))
        }
        ModelApi::OpenAi | ModelApi::Other => {
            let mut r = http.get(format!("{base}/models"));
            if let Some(c) = credential {
                r = r.bearer_auth(c.value.expose());
            }
            (r, format!("GET {}/models", shown(base)))
        }
    };
    let redactor = Redactor::new(credential.map(|c| c.value.expose()));
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            return Check::error(
                name,
                format!(
                    "{what} failed: {}",
                    redactor.redact(&causes(&e.without_url()))
                ),
                "check the endpoint's URL and that this machine reaches it (`rdev doctor \
                 --offline` skips this call)",
            )
        }
    };
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let snippet: String = redactor
        .redact(body.trim())
        .chars()
        .take(SNIPPET_CHARS)
        .collect();
    let key = credential.map_or("the request".to_owned(), |c| c.name.clone());
    match status {
        s if s.is_success() => Check::ok(name, format!("{what} answered {}", s.as_u16())),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Check::error(
            name,
            format!(
                "{what} answered {}: the endpoint refused {key} ({snippet})",
                status.as_u16()
            ),
            format!(
                "set a valid {key} (from {}), or the endpoint it belongs to",
                endpoint.source
            ),
        ),
        StatusCode::TOO_MANY_REQUESTS => Check::warning(
            name,
            format!("{what} answered 429 (rate limited); the credentials were not refused"),
            "wait, or check the account's rate limits",
        ),
        s => Check::warning(
            name,
            format!(
                "{what} answered {}: {snippet}; the credentials were not refused, but the \
                 endpoint may not serve this call",
                s.as_u16()
            ),
            "nothing if builds work; otherwise check the endpoint's base URL",
        ),
    }
}

/// Woodpecker answers `GET /api/user` with its token (when configured and not offline).
pub(super) async fn woodpecker(config: &Config, offline: bool) -> Check {
    const NAME: &str = "woodpecker";
    let Some(wp) = &config.woodpecker else {
        return Check::ok(NAME, "not configured (builds are not followed through CI)");
    };
    let url = shown(&wp.url);
    if offline {
        return Check::ok(NAME, format!("{url} configured; not called (--offline)"));
    }
    let client = match WoodpeckerClient::new(&wp.url, wp.token.clone()) {
        Ok(c) => c,
        Err(e) => {
            return Check::error(
                NAME,
                e.to_string(),
                "fix woodpecker.url (RDEV_WOODPECKER__URL)",
            )
        }
    };
    match client.current_user().await {
        Ok(login) => Check::ok(NAME, format!("{url} answers; the token belongs to {login}")),
        Err(e) => {
            use crate::woodpecker::WoodpeckerError as E;
            match &e {
                E::Http {
                    status: 401 | 403, ..
                } => Check::error(
                    NAME,
                    format!("{url} refused the token: {e}"),
                    "set a valid personal access token in woodpecker.token \
                     (RDEV_WOODPECKER__TOKEN; Woodpecker: user settings, Personal Access Token)",
                ),
                E::Transport { .. } => Check::error(
                    NAME,
                    format!("{url} is unreachable: {e}"),
                    "check woodpecker.url (RDEV_WOODPECKER__URL) and that this machine reaches it",
                ),
                _ => Check::warning(
                    NAME,
                    format!("{url}: {e}"),
                    "check woodpecker.url points at Woodpecker's base URL",
                ),
            }
        }
    }
}
