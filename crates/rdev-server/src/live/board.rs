//! [`BoardWatch`]: "the task list changed", for live build lists. While at least one viewer
//! watches, one poller per node reads the newest tasks every [`POLL`] and bumps a version
//! when their ids, statuses or attempts differ from the last read; viewers wait on the
//! version and re-read their own (filtered) page only when it moved. With no viewer left
//! the poller stops at its next tick.
//!
//! It must not render anything nor filter by permissions: a viewer re-reads through its
//! own grant.

use std::{
    collections::hash_map::DefaultHasher,
    hash::{Hash, Hasher},
    sync::{Arc, Mutex},
    time::Duration,
};

use rdev_core::{Store, TaskFilter};
use tokio::sync::watch;

/// How often the shared poller reads the newest tasks.
pub const POLL: Duration = Duration::from_secs(1);
/// How many of the newest tasks the fingerprint covers.
const WINDOW: u32 = 100;

/// The node's list watcher.
#[derive(Debug, Clone)]
pub struct BoardWatch {
    store: Arc<dyn Store>,
    tx: Arc<Mutex<Option<watch::Sender<u64>>>>,
}

impl BoardWatch {
    /// A watcher over `store`; nothing polls until someone subscribes.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            tx: Arc::default(),
        }
    }

    /// A receiver whose value changes whenever the newest tasks change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        let mut slot = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = slot.as_ref() {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(0);
        *slot = Some(tx.clone());
        tokio::spawn(self.clone().poll(tx));
        rx
    }

    async fn poll(self, tx: watch::Sender<u64>) {
        let mut last: Option<u64> = None;
        loop {
            {
                let mut slot = self.tx.lock().unwrap_or_else(|e| e.into_inner());
                if tx.receiver_count() == 0 {
                    if slot.as_ref().is_some_and(|t| t.same_channel(&tx)) {
                        *slot = None;
                    }
                    return;
                }
            }
            let filter = TaskFilter {
                limit: WINDOW,
                ..TaskFilter::default()
            };
            match self.store.list(&filter).await {
                Ok(tasks) => {
                    let mut h = DefaultHasher::new();
                    for t in &tasks {
                        (t.id, t.status, t.attempt).hash(&mut h);
                    }
                    let print = h.finish();
                    if last.is_some_and(|l| l != print) {
                        tx.send_modify(|v| *v += 1);
                    }
                    last = Some(print);
                }
                Err(e) => tracing::warn!(error = %e, "could not read the task list for live views"),
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
