//! [`CallbackReceiver`]: a real HTTP server that records every callback POST (headers and
//! raw body) so tests can verify signatures and count deliveries. It can be told to answer
//! with an error status for a while, to play a receiver that is down and comes back.
//!
//! Every body it receives is checked against the callback's JSON Schema (the one the
//! server publishes at `/schemas/callback.json`, [`callback_json_schema`]) by
//! [`callback_schema_errors`]; reading what arrived ([`CallbackReceiver::received`] and all
//! that build on it) panics on a body that breaks the contract, so every test that receives
//! a callback checks it.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
    Router,
};
use rdev_core::callback_schema::callback_json_schema;
use tokio::{net::TcpListener, sync::Notify};
use tokio_util::sync::CancellationToken;

/// Why `body` is not a valid callback body: not JSON, or each way it breaks the callback's
/// JSON Schema (with the place in the body). Empty when it is valid.
pub fn callback_schema_errors(body: &[u8]) -> Vec<String> {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    let validator = VALIDATOR.get_or_init(|| {
        jsonschema::draft202012::new(&callback_json_schema()).expect("the callback schema compiles")
    });
    let body: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return vec![format!("not JSON: {e}")],
    };
    validator
        .iter_errors(&body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// One received callback.
#[derive(Debug, Clone)]
pub struct ReceivedCallback {
    pub webhook_id: Option<String>,
    pub webhook_timestamp: Option<String>,
    pub webhook_signature: Option<String>,
    pub body: Vec<u8>,
    /// The status this server answered with.
    pub answered: u16,
}

impl ReceivedCallback {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("callback body is JSON")
    }
}

#[derive(Debug, Default)]
struct Inner {
    received: Vec<ReceivedCallback>,
    /// While set, every request is answered with this status.
    fail_with: Option<u16>,
}

#[derive(Debug, Clone, Default)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    notify: Arc<Notify>,
}

/// A callback receiver on 127.0.0.1.
#[derive(Debug)]
pub struct CallbackReceiver {
    addr: SocketAddr,
    shared: Shared,
    stop: CancellationToken,
}

impl Drop for CallbackReceiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl CallbackReceiver {
    /// Starts on a free port.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Shared::default();
        let app = Router::new()
            .route("/{*path}", post(receive))
            .route("/", post(receive))
            .with_state(shared.clone());
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await;
        });
        Ok(Self { addr, shared, stop })
    }

    /// The URL to give as `callback_url`.
    pub fn url(&self) -> String {
        format!("http://{}/callback", self.addr)
    }

    /// Answer every request with `status` until [`CallbackReceiver::recover`].
    pub fn fail_with(&self, status: u16) {
        self.shared.inner.lock().unwrap().fail_with = Some(status);
    }

    /// Answer 200 again.
    pub fn recover(&self) {
        self.shared.inner.lock().unwrap().fail_with = None;
    }

    /// Everything received so far, in order. Panics if a body is not a valid callback
    /// ([`callback_schema_errors`]).
    pub fn received(&self) -> Vec<ReceivedCallback> {
        let received = self.shared.inner.lock().unwrap().received.clone();
        for c in &received {
            let errors = callback_schema_errors(&c.body);
            assert!(
                errors.is_empty(),
                "a callback body breaks /schemas/callback.json: {errors:?}\nbody: {}",
                String::from_utf8_lossy(&c.body)
            );
        }
        received
    }

    /// Those answered with 2xx.
    pub fn accepted(&self) -> Vec<ReceivedCallback> {
        self.received()
            .into_iter()
            .filter(|c| (200..300).contains(&c.answered))
            .collect()
    }

    /// Waits until `n` callbacks were accepted, or `timeout` passes.
    pub async fn wait_for_accepted(&self, n: usize, timeout: Duration) -> Vec<ReceivedCallback> {
        self.wait_for(n, timeout, Self::accepted).await
    }

    /// Waits until `n` requests arrived, whatever they were answered, or `timeout` passes.
    pub async fn wait_for_received(&self, n: usize, timeout: Duration) -> Vec<ReceivedCallback> {
        self.wait_for(n, timeout, Self::received).await
    }

    /// Re-reads `list` on every request until it holds `n` entries or `timeout` passes.
    async fn wait_for(
        &self,
        n: usize,
        timeout: Duration,
        list: fn(&Self) -> Vec<ReceivedCallback>,
    ) -> Vec<ReceivedCallback> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before reading, so a request arriving in between still wakes us.
            let notified = self.shared.notify.notified();
            let got = list(self);
            if got.len() >= n || tokio::time::Instant::now() >= deadline {
                return got;
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }
}

async fn receive(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let status = {
        let mut inner = shared.inner.lock().unwrap();
        let status = inner.fail_with.unwrap_or(200);
        inner.received.push(ReceivedCallback {
            webhook_id: header("webhook-id"),
            webhook_timestamp: header("webhook-timestamp"),
            webhook_signature: header("webhook-signature"),
            body: body.to_vec(),
            answered: status,
        });
        status
    };
    shared.notify.notify_waiters();
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn completed() -> serde_json::Value {
        json!({
            "task_id": "01890000-0000-7000-8000-000000000000",
            "project_id": "site",
            "status": "completed",
            "cost_usd": null,
            "result": {
                "output": "ok",
                "artifacts": {"commit_sha": null, "deploy_url": null},
                "cost_usd": null,
                "usage": null,
                "agent": {},
            },
        })
    }

    #[test]
    fn a_body_that_breaks_the_schema_is_reported() {
        let good = completed();
        assert_eq!(
            callback_schema_errors(good.to_string().as_bytes()),
            Vec::<String>::new()
        );
        let mut done = good.clone();
        done["status"] = json!("done");
        let errors = callback_schema_errors(done.to_string().as_bytes());
        assert!(errors.iter().any(|e| e.contains("/status")), "{errors:?}");
        assert!(!callback_schema_errors(b"not json").is_empty());
    }

    #[tokio::test]
    #[should_panic(expected = "breaks /schemas/callback.json")]
    async fn reading_an_invalid_callback_fails_the_test() {
        let receiver = CallbackReceiver::start().await.unwrap();
        let mut body = completed();
        body["status"] = json!("done");
        reqwest::Client::new()
            .post(receiver.url())
            .json(&body)
            .send()
            .await
            .unwrap();
        receiver.wait_for_received(1, Duration::from_secs(10)).await;
    }
}
