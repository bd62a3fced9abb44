//! Housekeeping: what keeps a long-running rdev from growing without bound. At start-up it
//! sweeps what crashed runs left on this node's disk (checkouts no run released, agent
//! state whose worktree is gone, sandbox scratch dirs, the socket dirs of gateways whose
//! rdev was killed); then, until shutdown, it removes
//! failed checkouts kept for debugging once they are older than
//! `keep_failed_workspaces_hours`, prunes finished history older than `retention_days`
//! from the store in bounded batches (and the agent session files kept as long), and
//! measures the data directory for `/metrics`.
//!
//! It decides when; what may go is the git module's ([`crate::git::CheckoutEntry`]), the
//! adapters' ([`rdev_core::CodeAgent::workdir_state`], [`rdev_agents::sandbox::sweep_scratch`]),
//! the gateway's ([`crate::gateway::socket_dir::sweep`]) and the store's
//! ([`rdev_core::RetentionStore`]). The start-up sweep assumes the data
//! directory belongs to this node alone (docs/decisions.md): a lock file says whether it
//! does, and without it nothing is swept at start.

mod disk;

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use chrono::{DateTime, Utc};
use rdev_core::{ProviderRegistry, PruneReport, Store, StoreError};
use tokio_util::sync::CancellationToken;

pub use self::disk::{data_dir_size, lock_data_dir, sweep_kept, DataDirLock, Leftovers};
use crate::{config::Config, git::GitWorkspaces, metrics::Metrics};

/// Rows deleted per statement when pruning: small enough that no statement holds a lock
/// for long, large enough that a day's history goes in a few round trips.
pub const PRUNE_BATCH: u32 = 1000;

/// How long past the largest agent timeout a run's sandbox scratch dir may still be in use
/// (the CLI's kill grace, slow tear-down of a busy machine).
const RUN_SLACK: Duration = Duration::from_secs(15 * 60);

/// When and what the housekeeping does.
#[derive(Debug, Clone)]
pub struct HousekeepingConfig {
    /// This node's data directory (measured for `rdev_data_dir_bytes`).
    pub data_dir: PathBuf,
    /// How long a failed checkout is kept (`keep_failed_workspaces_hours`).
    pub keep_failed: Duration,
    /// How long finished history is kept (`retention_days`); `None`: forever.
    pub retention: Option<Duration>,
    /// Sandbox scratch dirs last changed longer ago than this belong to no running run.
    pub longest_run: Duration,
    /// Where sandbox scratch dirs and the gateway's socket dirs are made (the system's
    /// temporary directory).
    pub scratch_root: PathBuf,
    /// How often kept checkouts are looked at.
    pub sweep_every: Duration,
    /// How often the store is pruned.
    pub prune_every: Duration,
    /// How often the data directory is measured.
    pub measure_every: Duration,
}

impl HousekeepingConfig {
    /// The settings `config` asks for, with the built-in intervals (sweep every 10
    /// minutes, prune hourly, measure every 5 minutes; each also runs once at start).
    pub fn from_config(config: &Config) -> Self {
        Self {
            data_dir: config.data_dir.clone(),
            keep_failed: Duration::from_secs(
                config.keep_failed_workspaces_hours.saturating_mul(3600),
            ),
            retention: (config.retention_days > 0)
                .then(|| Duration::from_secs(config.retention_days.saturating_mul(24 * 3600))),
            longest_run: Duration::from_secs(config.max_timeout_secs).saturating_add(RUN_SLACK),
            scratch_root: std::env::temp_dir(),
            sweep_every: Duration::from_secs(600),
            prune_every: Duration::from_secs(3600),
            measure_every: Duration::from_secs(300),
        }
    }
}

/// The node's housekeeping; [`Housekeeping::run`] is its loop.
#[derive(Debug, Clone)]
pub struct Housekeeping {
    config: HousekeepingConfig,
    git: GitWorkspaces,
    registry: Arc<ProviderRegistry>,
    store: Arc<dyn Store>,
    metrics: Metrics,
}

impl Housekeeping {
    /// Housekeeping over these services.
    pub fn new(
        config: HousekeepingConfig,
        git: GitWorkspaces,
        registry: Arc<ProviderRegistry>,
        store: Arc<dyn Store>,
        metrics: Metrics,
    ) -> Self {
        Self {
            config,
            git,
            registry,
            store,
            metrics,
        }
    }

    /// What crashed runs left on disk, found now: call it before this node's workers
    /// start, because every checkout without a kept marker then belongs to no running
    /// attempt. Removing them ([`Housekeeping::remove_leftovers`]) may happen later: new
    /// checkouts get new names.
    pub async fn find_leftovers(&self) -> Leftovers {
        let (git, registry) = (self.git.clone(), Arc::clone(&self.registry));
        tokio::task::spawn_blocking(move || disk::find_leftovers(&git, &registry))
            .await
            .unwrap_or_default()
    }

    /// Removes `leftovers`, the sandbox scratch dirs no run holds and the socket dirs no
    /// running gateway owns; returns how many paths went.
    pub async fn remove_leftovers(&self, leftovers: Leftovers) -> usize {
        let root = self.config.scratch_root.clone();
        let now = SystemTime::now();
        let older_than = now
            .checked_sub(self.config.longest_run)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let (scratch, sockets) = tokio::task::spawn_blocking(move || {
            (
                rdev_agents::sandbox::sweep_scratch(&root, older_than),
                crate::gateway::socket_dir::sweep(&root, now),
            )
        })
        .await
        .unwrap_or_default();
        let removed = leftovers.remove(&self.git).await + scratch.len() + sockets.len();
        if removed > 0 {
            tracing::info!(
                removed,
                scratch = scratch.len(),
                gateway_sockets = sockets.len(),
                "swept what earlier runs left behind"
            );
        }
        removed
    }

    /// Prunes history that ended more than `retention_days` before `now`.
    pub async fn prune(&self, now: DateTime<Utc>) -> Result<PruneReport, StoreError> {
        let Some(retention) = self.config.retention else {
            return Ok(PruneReport::default());
        };
        let cutoff = chrono::Duration::from_std(retention)
            .ok()
            .and_then(|r| now.checked_sub_signed(r));
        // A retention longer than the calendar reaches back keeps everything.
        let Some(cutoff) = cutoff else {
            return Ok(PruneReport::default());
        };
        let report = self.store.prune_before(cutoff, PRUNE_BATCH).await?;
        // Session files outlive no longer than the builds that let a later build resume them.
        let (data_dir, until) = (self.config.data_dir.clone(), SystemTime::from(cutoff));
        let sessions =
            tokio::task::spawn_blocking(move || crate::sessions::prune_files(&data_dir, until))
                .await
                .unwrap_or_default();
        if sessions > 0 {
            tracing::info!(sessions, %cutoff, "pruned old session files");
        }
        if report.total() > 0 || report.skipped {
            tracing::info!(
                tasks = report.tasks,
                events = report.events,
                attempts = report.attempts,
                callbacks = report.callbacks,
                audit = report.audit,
                skipped = report.skipped,
                %cutoff,
                "pruned old history"
            );
        }
        Ok(report)
    }

    /// Measures the data directory and publishes it as `rdev_data_dir_bytes`; stops early
    /// (publishing nothing) when `stop` fires.
    pub async fn measure(&self, stop: &CancellationToken) -> Option<u64> {
        let (dir, stop) = (self.config.data_dir.clone(), stop.clone());
        let bytes = tokio::task::spawn_blocking(move || data_dir_size(&dir, &stop))
            .await
            .ok()
            .flatten()?;
        self.metrics.set_data_dir_bytes(bytes);
        Some(bytes)
    }

    /// Removes `leftovers` (found before the workers started; `None` when this node does
    /// not own its data directory), then sweeps kept checkouts, prunes and measures on
    /// their intervals until `shutdown` fires. Every step also runs once at start.
    pub async fn run(self, shutdown: CancellationToken, leftovers: Option<Leftovers>) {
        if let Some(leftovers) = leftovers {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.remove_leftovers(leftovers) => {}
            }
        }
        let tick = |every: Duration| {
            let mut t = tokio::time::interval(every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        };
        let (mut sweep, mut prune, mut measure) = (
            tick(self.config.sweep_every),
            tick(self.config.prune_every),
            tick(self.config.measure_every),
        );
        loop {
            // One job at a time; a shutdown stops the job running (a prune batch rolls back).
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = sweep.tick() => {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = sweep_kept(&self.git, SystemTime::now(), self.config.keep_failed) => {}
                    }
                }
                _ = prune.tick() => {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        r = self.prune(Utc::now()) => if let Err(e) = r {
                            tracing::warn!(error = %e, "pruning old history failed; trying again later");
                        },
                    }
                }
                _ = measure.tick() => {
                    self.measure(&shutdown).await;
                }
            }
        }
    }
}
