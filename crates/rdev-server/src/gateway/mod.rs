//! rdev's model gateway (docs/gateway.md): every model call of an agent goes through it.
//! It runs in-process in `rdev serve`, `rdev worker` and `rdev agent run`, listening on a
//! Unix socket (bind-mounted into every sandbox, whose relay hands the agent's connections
//! over it: [`listener`]) and on a loopback TCP port (agents run without a sandbox). It swaps the per-attempt token
//! for the upstream's key ([`grants`]; keys in the credential store are read as calls are
//! forwarded: [`keys`]), forwards the Messages API byte for byte, streaming
//! included ([`forward`]), fails over between upstreams before the first byte
//! ([`upstream`]), meters usage from the upstream's own reports ([`meter`]) into the store
//! and the metrics, enforces budgets, and serves the egress proxy ([`egress`]).
//!
//! It holds the upstream keys and never hands them out; it never runs agents and never
//! decides how a task ends (the worker does, woken through the grant).

pub mod egress;
pub mod fields;
pub mod forward;
pub mod grants;
pub mod keys;
pub mod listener;
pub mod meter;
pub mod socket_dir;
pub mod upload;
pub mod upstream;

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::Context;
use axum::{
    extract::Request,
    http::{Method, StatusCode},
    response::Response,
    routing::{any, post},
    Router,
};
use rdev_agents::sandbox::GatewayLink;
use rdev_core::{AttemptUsage, SecretString, Store};
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub use self::grants::{Grant, GrantSpec, GrantState, ModelSpend, Spend};
use self::{grants::Grants, meter::Reported, upstream::Failover};
use crate::{config::GatewaySettings, metrics::Metrics, secrets::SecretService};

/// A running gateway; cheap to clone.
#[derive(Debug, Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: GatewaySettings,
    http: reqwest::Client,
    grants: Arc<Grants>,
    keys: keys::UpstreamKeys,
    store: Option<Arc<dyn Store>>,
    metrics: Metrics,
    /// Holds the Unix socket, locked while the gateway lives; removed with the gateway.
    _socket_dir: socket_dir::SocketDir,
    socket: PathBuf,
    tcp: SocketAddr,
    relay_bin: Option<PathBuf>,
    stop: CancellationToken,
}

impl Gateway {
    /// Binds the Unix socket (in a private, locked directory under the system's temporary
    /// directory: [`socket_dir`]) and the loopback TCP listener, and serves both until [`Self::stop`]
    /// (after the workers: agents finishing in the shutdown grace still need the model).
    /// `store`: where usage and events of tasks go (`None` for `rdev agent run`);
    /// `secrets`: where upstream keys given as `api_key_secret` are read (`None`: such an
    /// upstream is skipped, its key unreadable).
    pub async fn start(
        settings: GatewaySettings,
        store: Option<Arc<dyn Store>>,
        metrics: Metrics,
        secrets: Option<Arc<SecretService>>,
    ) -> anyhow::Result<Self> {
        let shutdown = CancellationToken::new();
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .build()
            .context("could not build the gateway's HTTP client")?;
        let dir = socket_dir::SocketDir::new_in(&std::env::temp_dir())
            .context("could not create the gateway's socket directory")?;
        let socket = dir.socket();
        let unix = UnixListener::bind(&socket)
            .with_context(|| format!("could not listen on {}", socket.display()))?;
        let tcp = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("could not listen on {} (gateway.listen)", settings.listen))?;
        let tcp_addr = tcp.local_addr()?;
        let relay_bin = settings
            .relay_bin
            .clone()
            .or_else(rdev_agents::sandbox::relay::default_program);
        let gateway = Self {
            inner: Arc::new(Inner {
                http,
                grants: Arc::new(Grants::default()),
                keys: keys::UpstreamKeys::new(secrets),
                store,
                metrics,
                _socket_dir: dir,
                socket,
                tcp: tcp_addr,
                relay_bin,
                settings,
                stop: shutdown.clone(),
            }),
        };
        let app = gateway.router();
        let unix = listener::GatewayListener::new(unix, shutdown.clone());
        tokio::spawn(serve(app.clone(), Listener::Unix(unix), shutdown.clone()));
        tokio::spawn(serve(app, Listener::Tcp(tcp), shutdown));
        tracing::info!(
            socket = %gateway.inner.socket.display(),
            tcp = %tcp_addr,
            upstreams = ?gateway.inner.settings.upstreams.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
            "model gateway listening"
        );
        Ok(gateway)
    }

    /// Stops serving (calls in flight finish).
    pub fn stop(&self) {
        self.inner.stop.cancel();
    }

    /// How agents reach this gateway: its socket and TCP address, the relay sandboxes run,
    /// and the token a shared agent server presents.
    pub fn link(&self) -> GatewayLink {
        GatewayLink {
            socket: self.inner.socket.clone(),
            tcp: self.inner.tcp,
            relay_bin: self.inner.relay_bin.clone(),
            server_token: Some(self.server_token().clone()),
        }
    }

    /// The base URL of the loopback TCP listener (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.tcp)
    }

    /// The token a shared agent server presents (see [`grants`]).
    pub fn server_token(&self) -> &SecretString {
        self.inner.grants.server_token()
    }

    /// The server-wide budget cap.
    pub fn cap(&self) -> rdev_core::Budget {
        self.inner.settings.cap
    }

    /// Mints an attempt's grant; its token is valid until the grant is dropped.
    pub fn grant(&self, spec: GrantSpec) -> Grant {
        self.inner.grants.mint(spec)
    }

    /// The prices in effect.
    pub fn prices(&self) -> &rdev_core::PriceTable {
        &self.inner.settings.prices
    }

    fn timing(&self) -> upstream::Timing {
        upstream::Timing {
            first_byte: self.inner.settings.first_byte_timeout,
            retry_after_max: self.inner.settings.retry_after_max,
        }
    }

    fn router(&self) -> Router {
        let routes = Router::new()
            .route("/v1/messages", post(forward::messages))
            .route("/v1/messages/count_tokens", post(forward::messages))
            // Claude Code probes its base URL with `HEAD /` at start.
            .route("/", any(|| async { StatusCode::OK }))
            .fallback(|request: Request| async move {
                forward::api_error(
                    StatusCode::NOT_FOUND,
                    "not_found_error",
                    format!(
                        "rdev gateway: {} {} is not forwarded",
                        request.method(),
                        request.uri().path()
                    ),
                )
            })
            .with_state(self.clone());
        let gw = self.clone();
        // CONNECT (the egress proxy) is answered before routing: its target is an
        // authority, not a path.
        Router::new().fallback_service(tower::service_fn(move |request: Request| {
            let (gw, routes) = (gw.clone(), routes.clone());
            async move {
                if request.method() == Method::CONNECT {
                    Ok::<Response, std::convert::Infallible>(egress::connect(gw, request).await)
                } else {
                    routes.oneshot(request).await
                }
            }
        }))
    }

    /// Records a task event in the background (the caller is on a request's path).
    fn event(&self, grant: &GrantState, kind: &'static str, payload: serde_json::Value) {
        let (Some(store), Some(task)) = (self.inner.store.clone(), grant.spec.task) else {
            return;
        };
        tokio::spawn(async move {
            if let Err(e) = store.append_event(task, kind, payload).await {
                tracing::warn!(task_id = %task, error = %e, "could not store a gateway event");
            }
        });
    }

    fn failed_over(&self, grant: &GrantState, f: Failover) {
        tracing::warn!(from = %f.from, to = %f.to, reason = f.reason, detail = %f.detail, "model call failed over");
        self.inner
            .metrics
            .gateway_failover(&f.from, &f.to, f.reason);
        self.event(
            grant,
            "gateway_failover",
            serde_json::json!({"from": f.from, "to": f.to, "reason": f.reason, "detail": f.detail}),
        );
    }

    fn budget_refused(&self, grant: &GrantState) {
        self.inner
            .metrics
            .gateway_budget_refusal(&grant.spec.project);
    }

    /// Settles a finished call with what the upstream reported: the grant's ledger, the
    /// metrics and the store. A call that reported nothing (an error answer) is released.
    async fn settle(
        &self,
        reservation: grants::Reservation,
        requested_model: &str,
        ok: bool,
        reported: Reported,
    ) {
        if !reported.seen {
            drop(reservation);
            return;
        }
        let grant = Arc::clone(reservation.grant());
        let model = reported
            .model
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| requested_model.to_owned());
        let cost = self.inner.settings.prices.cost(&model, &reported.usage);
        let spec = &grant.spec;
        self.inner.metrics.model_usage(
            &spec.project,
            &spec.provider,
            &model,
            &reported.usage,
            cost,
        );
        if !ok {
            tracing::debug!(%model, "an error answer reported usage");
        }
        // Stored before the call counts as settled, so whoever waits for the attempt's calls
        // to settle finds them in the store.
        if let (Some(store), Some(task)) = (&self.inner.store, spec.task) {
            let row = AttemptUsage {
                attempt: spec.attempt,
                provider: spec.provider.clone(),
                model: model.clone(),
                usage: reported.usage,
                cost_usd: cost,
                calls: 1,
            };
            if let Err(e) = store.record_usage(task, spec.attempt, &row).await {
                tracing::warn!(task_id = %task, error = %e, "could not store model usage");
            }
        }
        let newly_exhausted = reservation.settle(&model, &reported.usage, cost);
        if newly_exhausted {
            let spent = grant.spent();
            self.event(
                &grant,
                "budget_exceeded",
                serde_json::json!({"cost_usd": spent.cost_usd, "tokens": spent.tokens,
                                   "budget": spec.budget}),
            );
        }
    }
}

enum Listener {
    Unix(listener::GatewayListener),
    Tcp(TcpListener),
}

async fn serve(app: Router, listener: Listener, shutdown: CancellationToken) {
    let stop = async move { shutdown.cancelled().await };
    let result = match listener {
        Listener::Unix(l) => axum::serve(l, app).with_graceful_shutdown(stop).await,
        Listener::Tcp(l) => {
            use axum::serve::ListenerExt;
            // A stream is many small writes; without this, each waits for the last ACK.
            let l = l.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(l, app).with_graceful_shutdown(stop).await
        }
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "the model gateway stopped serving");
    }
}
