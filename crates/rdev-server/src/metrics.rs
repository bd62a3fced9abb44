//! Prometheus metrics (`GET /metrics`, OpenMetrics text): queue depth by status (read from
//! the store at scrape time, so every node reports the shared queue), build durations and
//! outcomes, and agent cost, recorded by this node's workers, the model gateway's tokens,
//! cost, failovers, budget refusals and egress CONNECTs, and the size of this node's
//! data directory (measured in the background by the housekeeping, never at scrape time).
//! Encoding uses the official `prometheus-client` crate.

use std::sync::{atomic::AtomicU64, Arc};

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use rdev_core::TaskStatus;

use rdev_core::Store;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabel {
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    project: String,
    provider: String,
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    project: String,
    provider: String,
    model: String,
    /// `input`, `output`, `cache_read` or `cache_write`.
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailoverLabels {
    from: String,
    to: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProjectLabel {
    project: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

/// The model gateway's counters.
#[derive(Debug, Clone, Default)]
struct GatewayMetrics {
    tokens: Family<TokenLabels, Counter>,
    cost: Family<ModelLabels, Counter<f64, AtomicU64>>,
    calls: Family<ModelLabels, Counter>,
    failovers: Family<FailoverLabels, Counter>,
    budget_refusals: Family<ProjectLabel, Counter>,
    egress: Family<OutcomeLabel, Counter>,
}

impl GatewayMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "model_tokens",
            "Tokens metered by the model gateway on this node, by project, provider, model and kind",
            self.tokens.clone(),
        );
        registry.register(
            "model_cost_usd",
            "Cost of model calls metered by the gateway on this node (price table in docs/gateway.md)",
            self.cost.clone(),
        );
        registry.register(
            "model_calls",
            "Model calls metered by the gateway on this node",
            self.calls.clone(),
        );
        registry.register(
            "gateway_failovers",
            "Model calls moved to the next upstream before their first byte",
            self.failovers.clone(),
        );
        registry.register(
            "gateway_budget_refusals",
            "Model calls refused because the task's budget was used up",
            self.budget_refusals.clone(),
        );
        registry.register(
            "gateway_egress_connects",
            "CONNECTs to the egress proxy by outcome (allowed, refused)",
            self.egress.clone(),
        );
    }
}

/// This process's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    queue: Family<StatusLabel, Gauge>,
    build_seconds: Family<StatusLabel, Histogram>,
    agent_cost: Family<ProviderLabel, Counter<f64, AtomicU64>>,
    data_dir_bytes: Gauge,
    gateway: GatewayMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with rdev's metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rdev");
        let queue = Family::<StatusLabel, Gauge>::default();
        registry.register(
            "tasks",
            "Tasks by status (the whole queue, read at scrape time)",
            queue.clone(),
        );
        let build_seconds = Family::<StatusLabel, Histogram>::new_with_constructor(|| {
            // 1 s .. ~4.5 h: builds are agent runs, not requests.
            Histogram::new([
                1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 16200.0,
            ])
        });
        registry.register(
            "build_duration_seconds",
            "Build duration on this node by outcome",
            build_seconds.clone(),
        );
        let agent_cost = Family::<ProviderLabel, Counter<f64, AtomicU64>>::default();
        registry.register(
            "agent_cost_usd",
            "Agent cost reported by providers on this node",
            agent_cost.clone(),
        );
        let data_dir_bytes = Gauge::default();
        registry.register(
            "data_dir_bytes",
            "Disk space used by this node's data directory (measured periodically)",
            data_dir_bytes.clone(),
        );
        let gateway = GatewayMetrics::default();
        gateway.register(&mut registry);
        Self {
            registry: Arc::new(registry),
            queue,
            build_seconds,
            agent_cost,
            data_dir_bytes,
            gateway,
        }
    }

    /// Records one metered model call.
    pub fn model_usage(
        &self,
        project: &str,
        provider: &str,
        model: &str,
        usage: &rdev_core::MeteredUsage,
        cost_usd: f64,
    ) {
        let labels = ModelLabels {
            project: project.to_owned(),
            provider: provider.to_owned(),
            model: model.to_owned(),
        };
        for (kind, n) in [
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cache_read", usage.cache_read_input_tokens),
            ("cache_write", usage.cache_creation_input_tokens),
        ] {
            self.gateway
                .tokens
                .get_or_create(&TokenLabels {
                    project: labels.project.clone(),
                    provider: labels.provider.clone(),
                    model: labels.model.clone(),
                    kind: kind.to_owned(),
                })
                .inc_by(n);
        }
        if cost_usd.is_finite() && cost_usd > 0.0 {
            self.gateway.cost.get_or_create(&labels).inc_by(cost_usd);
        }
        self.gateway.calls.get_or_create(&labels).inc();
    }

    /// Records a model call moved from one upstream to the next.
    pub fn gateway_failover(&self, from: &str, to: &str, reason: &str) {
        self.gateway
            .failovers
            .get_or_create(&FailoverLabels {
                from: from.to_owned(),
                to: to.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Records a model call refused for budget.
    pub fn gateway_budget_refusal(&self, project: &str) {
        self.gateway
            .budget_refusals
            .get_or_create(&ProjectLabel {
                project: project.to_owned(),
            })
            .inc();
    }

    /// Records one egress CONNECT.
    pub fn egress(&self, outcome: &str) {
        self.gateway
            .egress
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Records a finished build attempt.
    pub fn build_finished(
        &self,
        outcome: &str,
        seconds: f64,
        provider: Option<&str>,
        cost_usd: Option<f64>,
    ) {
        self.build_seconds
            .get_or_create(&StatusLabel {
                status: outcome.to_owned(),
            })
            .observe(seconds);
        if let (Some(p), Some(c)) = (provider, cost_usd) {
            if c.is_finite() && c > 0.0 {
                self.agent_cost
                    .get_or_create(&ProviderLabel {
                        provider: p.to_owned(),
                    })
                    .inc_by(c);
            }
        }
    }

    /// Records the data directory's size, as last measured.
    pub fn set_data_dir_bytes(&self, bytes: u64) {
        self.data_dir_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// The OpenMetrics text of what this process recorded, without refreshing the queue
    /// gauges from a store.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// The OpenMetrics text, with the queue gauges refreshed from `store`.
    pub async fn render(&self, store: &dyn Store) -> Result<String, rdev_core::StoreError> {
        let counts = store.status_counts().await?;
        for status in TaskStatus::ALL {
            let n = counts
                .iter()
                .find(|(s, _)| *s == status)
                .map_or(0, |(_, n)| *n);
            self.queue
                .get_or_create(&StatusLabel {
                    status: status.as_str().to_owned(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        Ok(out)
    }
}
