//! [`RunTable`]: which runs of one adapter are active, finished, or cancelled before they
//! started, so that `CodeAgent::cancel` is correct at any moment — before a run registers
//! (it then ends at once as cancelled), while it runs, and after it finished (a no-op).
//! It holds cancellation tokens only; it never runs or stops anything itself.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use rdev_core::RunId;
use tokio_util::sync::CancellationToken;

/// How many finished run ids are remembered so a late cancel is recognised as a no-op.
const FINISHED_MEMORY: usize = 4096;

/// How long a cancel for a run that has not started yet is kept.
const EARLY_CANCEL_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// The runs of one adapter.
#[derive(Debug, Default)]
pub struct RunTable {
    inner: Mutex<Runs>,
}

#[derive(Debug, Default)]
struct Runs {
    active: HashMap<RunId, CancellationToken>,
    early_cancels: HashMap<RunId, Instant>,
    finished: HashSet<RunId>,
    finished_order: VecDeque<RunId>,
}

impl Runs {
    fn finish(&mut self, run: RunId) {
        self.active.remove(&run);
        if self.finished.insert(run) {
            self.finished_order.push_back(run);
        }
        while self.finished_order.len() > FINISHED_MEMORY {
            if let Some(old) = self.finished_order.pop_front() {
                self.finished.remove(&old);
            }
        }
    }
}

/// Marks its run finished when dropped, however `execute` ends (even if its future is
/// dropped mid-run).
#[derive(Debug)]
pub struct ActiveRun<'a> {
    table: &'a RunTable,
    run: RunId,
    token: CancellationToken,
}

impl ActiveRun<'_> {
    /// The token that fires when the run is cancelled.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

impl Drop for ActiveRun<'_> {
    fn drop(&mut self) {
        self.table.lock().finish(self.run);
    }
}

impl RunTable {
    fn lock(&self) -> MutexGuard<'_, Runs> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `run` as active, or returns `None` if it was cancelled before it started
    /// (the run then counts as finished).
    pub fn register(&self, run: RunId) -> Option<ActiveRun<'_>> {
        let mut runs = self.lock();
        if runs.early_cancels.remove(&run).is_some() {
            runs.finish(run);
            return None;
        }
        let token = CancellationToken::new();
        runs.active.insert(run, token.clone());
        Some(ActiveRun {
            table: self,
            run,
            token,
        })
    }

    /// Cancels `run`: fires its token if active, remembers the cancel if it has not
    /// started, does nothing if it finished.
    pub fn cancel(&self, run: RunId) {
        let mut runs = self.lock();
        if let Some(token) = runs.active.get(&run) {
            token.cancel();
        } else if !runs.finished.contains(&run) {
            let now = Instant::now();
            runs.early_cancels
                .retain(|_, at| now.duration_since(*at) < EARLY_CANCEL_TTL);
            runs.early_cancels.insert(run, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_before_during_and_after_a_run() {
        let table = RunTable::default();
        let early = RunId::new();
        table.cancel(early);
        assert!(table.register(early).is_none(), "cancelled before start");

        let run = RunId::new();
        let active = table.register(run).expect("registers");
        assert!(!active.token().is_cancelled());
        table.cancel(run);
        table.cancel(run);
        assert!(active.token().is_cancelled());
        drop(active);

        // After it finished, a cancel is a no-op: it is not kept as an early cancel.
        table.cancel(run);
        assert!(table.lock().early_cancels.is_empty());
    }
}
