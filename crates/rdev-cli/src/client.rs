//! A small client for rdev's HTTP API, used by the commands that act on a running server
//! (`project`, later `build` and `task`). It turns the API's `{"error":{"code","message"}}`
//! into a one-line error and never prints the token.

use anyhow::{anyhow, Context};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Where the server is and how to authenticate.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// rdev server URL.
    #[arg(
        long,
        global = true,
        env = "RDEV_SERVER",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    pub server: String,
    /// API token (read from the environment only, so it never shows in `ps`).
    #[arg(skip = std::env::var("RDEV_API_TOKEN").ok())]
    pub token: Option<String>,
}

/// An API client.
#[derive(Debug)]
pub struct ApiClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client for `args.server`.
    pub fn new(args: &ServerArgs) -> Self {
        Self {
            base: args.server.trim_end_matches('/').to_owned(),
            token: args.token.clone(),
            http: reqwest::Client::new(),
        }
    }

    /// Sends a request; a non-2xx answer becomes `code: message`. Returns the JSON body
    /// (or `Null` for an empty one).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        self.call_with(method, path, body, None).await
    }

    /// Opens a streaming GET (server-sent events); errors as for [`ApiClient::call`].
    pub async fn stream(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.get(&url).header("accept", "text/event-stream");
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("could not reach the rdev server at {}", self.base))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        Err(api_error(status, &text, &Method::GET, path))
    }

    /// [`ApiClient::call`] with an optional `Idempotency-Key`.
    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        if let Some(key) = idempotency_key {
            req = req.header("idempotency-key", key);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("could not reach the rdev server at {}", self.base))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .context("could not read the server's answer")?;
        if status.is_success() {
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&text).context("the server answered with invalid JSON");
        }
        Err(api_error(status, &text, &method, path))
    }
}

fn api_error(status: StatusCode, text: &str, method: &Method, path: &str) -> anyhow::Error {
    match serde_json::from_str::<Value>(text) {
        Ok(v) if v["error"]["code"].is_string() => anyhow!(
            "{} ({}): {}",
            v["error"]["code"].as_str().unwrap_or_default(),
            status.as_u16(),
            v["error"]["message"].as_str().unwrap_or_default()
        ),
        _ => anyhow!(
            "{method} {path} failed with status {}: {}",
            status.as_u16(),
            text.chars().take(200).collect::<String>()
        ),
    }
}
