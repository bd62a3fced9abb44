//! The worker pool: claims tasks from the queue, runs each one ([`task`]), keeps every held
//! lease alive with one batched heartbeat, reaps expired leases, and on shutdown stops
//! claiming, lets running tasks finish within the grace period, then hands the rest back.
//! It owns scheduling only; what a build does is in [`task`].

mod build_ctx;
mod events;
mod landing;
mod metering;
mod outcome;
mod publish;
mod push_protection;
mod task;

use std::{sync::Arc, time::Duration};

use rdev_core::LeaseKey;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use self::outcome::BuildOutcome;
use crate::{config::Config, services::Services};

/// How a pool schedules.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Name written on attempts (host and pid by default).
    pub worker_id: String,
    /// Tasks run at once.
    pub concurrency: u32,
    /// How long a claim or heartbeat holds a task.
    pub lease: Duration,
    /// How often held leases are extended (a third of the lease by default).
    pub heartbeat_every: Duration,
    /// How often expired leases are returned to the queue.
    pub reap_every: Duration,
    /// How long running tasks may finish after shutdown before their leases are handed back.
    pub grace: Duration,
}

impl PoolConfig {
    /// Defaults derived from configuration.
    pub fn from_config(config: &Config) -> Self {
        let lease = config.worker_lease();
        Self {
            worker_id: format!(
                "{}-{}",
                std::env::var("HOSTNAME").unwrap_or_else(|_| "rdev".into()),
                std::process::id()
            ),
            concurrency: config.worker_concurrency,
            lease,
            heartbeat_every: lease / 3,
            reap_every: Duration::from_secs(5),
            grace: Duration::from_secs(config.shutdown_grace_secs),
        }
    }
}

/// Claims and runs tasks until `shutdown` fires.
#[derive(Debug)]
pub struct WorkerPool {
    deps: Arc<Services>,
    config: PoolConfig,
}

impl WorkerPool {
    /// A pool over `deps`.
    pub fn new(deps: Arc<Services>, config: PoolConfig) -> Self {
        Self { deps, config }
    }

    /// Runs until `shutdown` is cancelled, then drains.
    pub async fn run(self, shutdown: CancellationToken) {
        if self.config.concurrency == 0 {
            tracing::info!("worker concurrency is 0: this node only serves the API");
            shutdown.cancelled().await;
            return;
        }
        let this = Arc::new(self);
        let background = CancellationToken::new();
        let heartbeat = tokio::spawn(Arc::clone(&this).heartbeat_loop(background.clone()));
        let reaper = tokio::spawn(Arc::clone(&this).reap_loop(background.clone()));
        let mut tasks = JoinSet::new();
        let mut signal = this.deps.store.subscribe();
        tracing::info!(worker = %this.config.worker_id, concurrency = this.config.concurrency, "worker pool started");
        while !shutdown.is_cancelled() {
            while tasks.try_join_next().is_some() {}
            let free = this.config.concurrency.saturating_sub(tasks.len() as u32);
            let claimed = if free > 0 {
                match this
                    .deps
                    .store
                    .claim(&this.config.worker_id, free, this.config.lease)
                    .await
                {
                    Ok(leases) => leases,
                    Err(e) => {
                        tracing::warn!(error = %e, "claim failed; retrying shortly");
                        Vec::new()
                    }
                }
            } else {
                Vec::new()
            };
            let got = claimed.len();
            for lease in claimed {
                // Cancelled when the lease is lost or the task is cancelled: the attempt
                // must stop and must not write.
                let stop = CancellationToken::new();
                let key = lease.key();
                this.deps.running.register(key, stop.clone());
                let pool = Arc::clone(&this);
                tasks.spawn(async move {
                    task::run(&pool.deps, lease, stop).await;
                    pool.deps.running.remove(&key);
                });
            }
            if got == 0 || tasks.len() as u32 >= this.config.concurrency {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = this.deps.store.wait_for_work(&mut signal, Duration::from_secs(1)) => {}
                    Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                }
            }
        }
        tracing::info!(running = tasks.len(), "worker pool draining");
        let drained = tokio::time::timeout(this.config.grace, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            // Past the grace period: stop the agents and give the tasks back to the queue.
            let keys: Vec<(LeaseKey, CancellationToken)> = this.deps.running.entries();
            for (_, stop) in &keys {
                stop.cancel();
            }
            while tasks.join_next().await.is_some() {}
            for (key, _) in keys {
                if let Err(e) = this
                    .deps
                    .store
                    .fail(&key, "worker shut down before the task finished", true)
                    .await
                {
                    tracing::debug!(task_id = %key.task_id, error = %e, "could not hand back lease");
                }
            }
        }
        background.cancel();
        let _ = heartbeat.await;
        let _ = reaper.await;
        // Workspace deletions and spare refills still running. A refill cut short is swept
        // by a later one; a deletion cut short is finished by the next start-up sweep.
        if tokio::time::timeout(this.config.grace, this.deps.git.settled())
            .await
            .is_err()
        {
            tracing::warn!("background git work did not finish within the grace period");
        }
        tracing::info!("worker pool stopped");
    }

    /// One batched heartbeat for every held lease; a lost lease stops its task.
    async fn heartbeat_loop(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.config.heartbeat_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let keys = self.deps.running.keys();
            if keys.is_empty() {
                continue;
            }
            match self.deps.store.heartbeat(&keys, self.config.lease).await {
                Ok(outcome) => {
                    for key in outcome.lost {
                        if self.deps.running.lease_lost(&key) {
                            tracing::warn!(task_id = %key.task_id, "lease lost (cancelled, expired or reaped); stopping the attempt");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
            }
        }
    }

    async fn reap_loop(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.config.reap_every);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.deps.store.reap_expired().await {
                Ok(r) if !r.requeued.is_empty() || !r.dead.is_empty() => {
                    tracing::info!(
                        requeued = r.requeued.len(),
                        dead = r.dead.len(),
                        "reaped expired leases"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reaper failed"),
            }
        }
    }
}
