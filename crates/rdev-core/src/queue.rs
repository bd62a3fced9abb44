//! The work-queue port ([`WorkQueue`]) and the rules it shares across backends: leases
//! ([`Lease`], [`LeaseKey`]), the retry schedule ([`RetryPolicy`]), the clock every queue
//! decision reads ([`Clock`]), and the wake-up signal idle workers wait on ([`WorkSignal`]).
//! It must not sleep, spawn or touch a database: adapters do that.

use std::{
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{store::StoreError, BuildResult, TaskId, WorkTask};

/// The time source of queue decisions (claim eligibility, lease expiry, backoff), so tests
/// move time instead of sleeping. Instants are whole milliseconds, the precision both
/// backends store.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current instant, truncated to milliseconds.
    fn now(&self) -> DateTime<Utc>;
}

/// Truncates an instant to whole milliseconds.
pub fn truncate_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// The machine's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        truncate_millis(Utc::now())
    }
}

/// A clock that only moves when told to; for tests of leases and backoff.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        Self(Arc::new(Mutex::new(truncate_millis(start))))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *t += chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// When a failed attempt runs again: `min(base * 2^(n-1), cap)` after the n-th attempt,
/// scaled by a random factor in `[1 - jitter, 1 + jitter]` so failed tasks spread out.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    pub base: Duration,
    pub cap: Duration,
    /// Relative jitter, 0.2 for ±20%.
    pub jitter: f64,
}

impl RetryPolicy {
    /// The longest pause between attempts before jitter: one hour.
    pub const DEFAULT_CAP: Duration = Duration::from_secs(3600);

    /// The pause after the `attempt`-th attempt failed (1-based). `unit` is a random number
    /// in `[0, 1)`; passing it in keeps this function pure and testable.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(40);
        let raw = self.base.saturating_mul(1u32 << exp.min(31));
        let raw = if exp > 31 { self.cap } else { raw };
        let capped = raw.min(self.cap);
        let factor = 1.0 - self.jitter + 2.0 * self.jitter * unit.clamp(0.0, 1.0);
        capped.mul_f64(factor.max(0.0))
    }
}

impl Default for RetryPolicy {
    /// 5 s base, 1 h cap, ±20% jitter.
    fn default() -> Self {
        Self {
            base: Duration::from_secs(5),
            cap: Self::DEFAULT_CAP,
            jitter: 0.2,
        }
    }
}

/// The secret-free proof that a worker holds a task: fresh for every claim, so a worker
/// that lost its lease can never write with it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LeaseToken(pub Uuid);

impl fmt::Display for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Names one lease: the guard of every write a worker makes on its task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseKey {
    pub task_id: TaskId,
    pub token: LeaseToken,
}

/// A claimed task and the lease that lets one worker run it.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    /// The task as claimed (status `running`, `attempt` counts this run).
    pub task: WorkTask,
    pub token: LeaseToken,
    pub expires_at: DateTime<Utc>,
}

impl Lease {
    /// The key to pass to heartbeat, complete and fail.
    pub fn key(&self) -> LeaseKey {
        LeaseKey {
            task_id: self.task.id,
            token: self.token,
        }
    }
}

/// What a batched heartbeat did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatOutcome {
    /// The new expiry of the leases still held.
    pub extended_until: DateTime<Utc>,
    /// Leases that are gone (cancelled, expired, reaped or replaced): their attempts must
    /// stop. By lease, not task id, so a task claimed again by the same worker has its new
    /// attempt's lease held while the old one's is lost.
    pub lost: Vec<LeaseKey>,
}

/// What a batched completion did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompleteReport {
    pub completed: Vec<TaskId>,
    /// Leases that were no longer held; nothing was written for them.
    pub lost: Vec<TaskId>,
}

/// What became of a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Back in the queue, claimable from `run_at`.
    Retrying { run_at: DateTime<Utc> },
    /// Out of attempts or not retryable: status `failed`.
    Dead,
}

/// What a reaper pass did with expired leases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReapReport {
    pub requeued: Vec<TaskId>,
    pub dead: Vec<TaskId>,
}

/// Why [`WorkQueue::wait_for_work`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// New work was announced (NOTIFY or an enqueue in this process).
    Notified,
    /// The poll interval or the caller's limit passed without an announcement.
    Poll,
}

pub use crate::signal::WorkSignal;

/// The work queue of SPEC 4. Every write a worker makes is guarded by its lease
/// `(id, token, status = running, not expired)`; a write without a live lease changes
/// nothing and returns [`StoreError::LeaseLost`].
#[async_trait]
pub trait WorkQueue: Send + Sync {
    /// Claims up to `max` runnable tasks (priority, then `run_at`, then id) for `worker`,
    /// each leased for `lease_for`. Two concurrent claims never return the same task.
    async fn claim(
        &self,
        worker: &str,
        max: u32,
        lease_for: Duration,
    ) -> Result<Vec<Lease>, StoreError>;
    /// Extends every held lease in `leases` by `lease_for` from now, in one transaction.
    async fn heartbeat(
        &self,
        leases: &[LeaseKey],
        lease_for: Duration,
    ) -> Result<HeartbeatOutcome, StoreError>;
    /// Finishes a task with `result`; the callback outbox row (when the spec has a
    /// callback URL) is written in the same transaction.
    async fn complete(&self, lease: &LeaseKey, result: BuildResult) -> Result<(), StoreError>;
    /// Completes several tasks in one transaction; lost leases are reported, not errors.
    async fn complete_many(
        &self,
        items: &[(LeaseKey, BuildResult)],
    ) -> Result<CompleteReport, StoreError>;
    /// Records a failed attempt: retried with backoff while attempts remain and the error
    /// is `retryable`, otherwise dead (status `failed`, callback written).
    async fn fail(
        &self,
        lease: &LeaseKey,
        error: &str,
        retryable: bool,
    ) -> Result<FailOutcome, StoreError>;
    /// Fails the task for good (never retried) and records `result` on it, in the same
    /// transaction as the callback row, which carries both: what a build still produced
    /// when it failed after pushing (its commit, the CI pipeline that failed).
    async fn fail_with_result(
        &self,
        lease: &LeaseKey,
        error: &str,
        result: BuildResult,
    ) -> Result<(), StoreError>;
    /// Cancels a queued or running task (a running task's worker loses its lease).
    async fn cancel(&self, id: TaskId) -> Result<WorkTask, StoreError>;
    /// Returns tasks whose lease expired to the queue with backoff, or marks them dead.
    async fn reap_expired(&self) -> Result<ReapReport, StoreError>;
    /// A subscription for [`WorkQueue::wait_for_work`].
    fn subscribe(&self) -> WorkSignal;
    /// Waits until work is announced, the poll interval passes, or `max` passes.
    async fn wait_for_work(&self, signal: &mut WorkSignal, max: Duration) -> Wake;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_base_and_is_capped() {
        let p = RetryPolicy {
            base: Duration::from_secs(5),
            cap: RetryPolicy::DEFAULT_CAP,
            jitter: 0.2,
        };
        assert_eq!(p.delay(1, 0.5), Duration::from_secs(5));
        assert_eq!(p.delay(2, 0.5), Duration::from_secs(10));
        assert_eq!(p.delay(4, 0.5), Duration::from_secs(40));
        assert_eq!(p.delay(30, 0.5), Duration::from_secs(3600));
        assert_eq!(p.delay(u32::MAX, 0.5), Duration::from_secs(3600));
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(1, 0.0), Duration::from_secs(4));
        assert_eq!(p.delay(1, 1.0), Duration::from_secs(6));
        for i in 0..100 {
            let d = p.delay(3, f64::from(i) / 100.0);
            assert!(
                d >= Duration::from_secs(16) && d <= Duration::from_secs(24),
                "{d:?}"
            );
        }
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(Utc::now());
        let t0 = c.now();
        assert_eq!(c.now(), t0);
        c.advance(Duration::from_millis(1500));
        assert_eq!((c.now() - t0).num_milliseconds(), 1500);
        assert_eq!(SystemClock.now().timestamp_subsec_nanos() % 1_000_000, 0);
    }
}
