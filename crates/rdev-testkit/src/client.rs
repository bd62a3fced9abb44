//! [`TestClient`]: a small HTTP client for API tests, holding the server's base URL and an
//! optional bearer token so a test names only the method, path and body. It asserts
//! nothing: the caller checks the status and body it returns.

use reqwest::{Method, RequestBuilder};
use serde_json::Value;

/// Requests to one server, as one caller (with or without a bearer token).
#[derive(Debug, Clone)]
pub struct TestClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl TestClient {
    /// A client for the server at `base` (e.g. `http://127.0.0.1:1234`), without a token.
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.into(),
            token: None,
        }
    }

    /// The same client sending `Authorization: Bearer <token>`.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request to `path`, with the token if there is one, for the caller to finish.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self.http.request(method, self.url(path));
        match &self.token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    /// Sends `method path` (with `body` as JSON if given) and returns the status and the
    /// body: parsed JSON, or the text as a JSON string when it is not JSON.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.request(method.clone(), path);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: reading the body: {e}"));
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    /// GETs `path` and returns the body as text, whatever the status.
    pub async fn get_text(&self, path: &str) -> String {
        self.request(Method::GET, path)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .text()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: reading the body: {e}"))
    }
}
