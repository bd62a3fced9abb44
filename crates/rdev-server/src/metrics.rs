//! Prometheus metrics (`GET /metrics`, OpenMetrics text): queue depth by status (read from
//! the store at scrape time, so every node reports the shared queue), build durations and
//! outcomes, and agent cost, recorded by this node's workers, and the size of this node's
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

/// This process's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    queue: Family<StatusLabel, Gauge>,
    build_seconds: Family<StatusLabel, Histogram>,
    agent_cost: Family<ProviderLabel, Counter<f64, AtomicU64>>,
    data_dir_bytes: Gauge,
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
        Self {
            registry: Arc::new(registry),
            queue,
            build_seconds,
            agent_cost,
            data_dir_bytes,
        }
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
