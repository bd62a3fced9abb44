//! The callback dispatcher: drains the outbox the store writes when a task finishes, POSTs
//! each payload signed per Standard Webhooks, and records every attempt on the row (so
//! deliveries are visible on the task). Failures retry with capped exponential backoff and
//! jitter until the row is older than `max_age` (24 h by default), then it expires. The
//! `webhook-id` stays the same across retries so receivers can de-duplicate. A callback is
//! never sent unsigned: without the project's signing secret the attempt fails and says so
//! on the row, and is retried like any other failure (rotating the secret lets it through).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::Utc;
use rdev_core::{OutboxRow, ProjectName, RetryPolicy, SecretString};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{
    signing::sign,
    url_policy::{check_url, is_public_ip},
};
use rdev_core::Store;

/// Where the dispatcher finds each project's signing secret.
#[async_trait]
pub trait SigningKeys: Send + Sync + std::fmt::Debug {
    /// The project's `whsec_` secret, if it has one.
    async fn signing_secret(&self, project: &ProjectName) -> Result<Option<SecretString>, String>;
}

/// Dispatcher settings.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// Allow private/loopback targets (mirrors `allow_private_callbacks`).
    pub allow_private: bool,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Give up on a row this long after it was written.
    pub max_age: Duration,
    /// Backoff between attempts.
    pub retry: RetryPolicy,
    /// Rows taken per round (delivered concurrently).
    pub batch: u32,
    /// Pause when no row is due.
    pub idle_poll: Duration,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            allow_private: false,
            timeout: Duration::from_secs(10),
            max_age: Duration::from_secs(24 * 60 * 60 + 60),
            retry: RetryPolicy {
                base: Duration::from_secs(5),
                cap: Duration::from_secs(30 * 60),
                jitter: 0.2,
            },
            batch: 16,
            idle_poll: Duration::from_millis(500),
        }
    }
}

/// A resolver that refuses names resolving only to private or loopback addresses, so a
/// public-looking callback host cannot be pointed inside the network (DNS rebinding).
#[derive(Debug)]
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| is_public_ip(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(
                    format!("{host} resolves only to private or loopback addresses").into(),
                );
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Delivers outbox rows until shut down.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    store: Arc<dyn Store>,
    keys: Arc<dyn SigningKeys>,
    http: reqwest::Client,
    config: DispatchConfig,
}

/// How one attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    Failed(String),
}

impl Dispatcher {
    /// A dispatcher over `store`'s outbox.
    pub fn new(store: Arc<dyn Store>, keys: Arc<dyn SigningKeys>, config: DispatchConfig) -> Self {
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("rdev/", env!("CARGO_PKG_VERSION")));
        if !config.allow_private {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        let http = builder.build().expect("the HTTP client builds");
        Self {
            store,
            keys,
            http,
            config,
        }
    }

    /// Runs until `shutdown` is cancelled, then lets the attempts in flight finish. Up to
    /// `batch` attempts run at once; a free slot is filled as soon as one ends, so a new
    /// callback never waits for the slowest delivery of an earlier batch.
    /// A row written by this process wakes it at once (the store's outbox signal); rows of
    /// other nodes are found by polling every `idle_poll`.
    pub async fn run(self, shutdown: CancellationToken) {
        let hold = self.config.timeout * 3;
        let mut written = self.store.subscribe_outbox();
        let mut signal_open = true;
        let mut in_flight = JoinSet::new();
        while !shutdown.is_cancelled() {
            let room = self.config.batch.saturating_sub(in_flight.len() as u32);
            if room > 0 {
                match self.store.claim_due(room, hold).await {
                    Ok(rows) => {
                        for row in rows {
                            let this = self.clone();
                            in_flight.spawn(async move { this.attempt(row).await });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "could not read the callback outbox"),
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                _ = tokio::time::sleep(self.config.idle_poll) => {}
                changed = written.0.changed(), if signal_open => signal_open = changed.is_ok(),
            }
        }
        while in_flight.join_next().await.is_some() {}
    }

    /// One delivery attempt of `row`, recorded on the row.
    pub async fn attempt(&self, row: OutboxRow) -> Delivery {
        let outcome = self.send(&row).await;
        let record = match &outcome {
            Delivery::Delivered => self.store.mark_delivered(row.id).await,
            Delivery::Failed(error) => {
                let age = (Utc::now() - row.created_at).to_std().unwrap_or_default();
                let delay = self
                    .config
                    .retry
                    .delay(row.attempts + 1, rand::random::<f64>());
                let retry_at = (age + delay < self.config.max_age)
                    .then(|| Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default());
                tracing::warn!(task_id = %row.task_id, attempt = row.attempts + 1, %error, gives_up = retry_at.is_none(), "callback delivery failed");
                self.store.mark_failed(row.id, error, retry_at).await
            }
        };
        if let Err(e) = record {
            tracing::warn!(task_id = %row.task_id, error = %e, "could not record a callback attempt");
        }
        outcome
    }

    async fn send(&self, row: &OutboxRow) -> Delivery {
        if let Err(e) = check_url(&row.url, self.config.allow_private) {
            return Delivery::Failed(e.to_string());
        }
        let Some(project) = row
            .payload
            .get("project_id")
            .and_then(|v| v.as_str())
            .and_then(|p| ProjectName::parse(p).ok())
        else {
            return Delivery::Failed(
                "not sent: the payload names no project, so there is no key to sign it with"
                    .to_owned(),
            );
        };
        let secret = match self.keys.signing_secret(&project).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Delivery::Failed(format!(
                    "not sent: project {project} has no callback signing secret (rotate it \
                     with POST /projects/{project}/webhook-secret); callbacks are never sent \
                     unsigned"
                ))
            }
            Err(e) => return Delivery::Failed(format!("signing secret unavailable: {e}")),
        };
        let body = match serde_json::to_vec(&row.payload) {
            Ok(b) => b,
            Err(e) => return Delivery::Failed(format!("payload is not serialisable: {e}")),
        };
        let id = format!("msg_{}_{}", row.task_id.0.simple(), row.id);
        let mut req = self
            .http
            .post(&row.url)
            .header("content-type", "application/json")
            .header("webhook-id", &id);
        let ts = Utc::now().timestamp();
        req = req.header("webhook-timestamp", ts.to_string());
        match sign(&secret, &id, ts, &body) {
            Ok(h) => req = req.header("webhook-signature", h.webhook_signature),
            Err(e) => return Delivery::Failed(e.to_string()),
        }
        match req.body(body).send().await {
            Ok(resp) if resp.status().is_success() => Delivery::Delivered,
            Ok(resp) => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                Delivery::Failed(format!(
                    "receiver answered {}: {}",
                    status.as_u16(),
                    text.chars().take(200).collect::<String>()
                ))
            }
            Err(e) => Delivery::Failed(format!("request failed: {}", without_url(&e))),
        }
    }
}

/// A reqwest error without the URL (it may carry a token in its query string).
fn without_url(e: &reqwest::Error) -> String {
    let mut e = format!("{}", ErrorWithoutUrl(e));
    e.truncate(300);
    e
}

struct ErrorWithoutUrl<'a>(&'a reqwest::Error);

impl std::fmt::Display for ErrorWithoutUrl<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.0.is_timeout() {
            "timed out"
        } else if self.0.is_connect() {
            "could not connect"
        } else if self.0.is_redirect() {
            "redirect refused"
        } else {
            "transport error"
        };
        let mut source = std::error::Error::source(self.0);
        let mut detail = String::new();
        while let Some(s) = source {
            detail = s.to_string();
            source = s.source();
        }
        if detail.is_empty() {
            f.write_str(kind)
        } else {
            write!(f, "{kind}: {detail}")
        }
    }
}
