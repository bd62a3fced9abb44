//! [`SqlStore`]: the one adapter type that implements every storage port of `rdev-core`
//! on a [`Db`] (either backend), its configuration, construction and the process-local
//! wake-up signal. The ports live in sibling modules: tasks ([`crate::task_store`]), the
//! queue, projects, the outbox, retention and usage; the NOTIFY listener in `notify`. It
//! must not decide retries or lease rules by itself: those follow [`rdev_core::queue`].

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use rdev_core::{Clock, RetryPolicy, StoreError, SystemClock, TaskId};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    clock::DatabaseClock,
    db::{Backend, Db, DbError},
    notify,
};

/// How the store runs its queue.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Backoff between attempts after a failure or an expired lease.
    pub retry: RetryPolicy,
    /// How often an idle worker looks for work when no announcement arrives: the fallback
    /// that keeps pickup working behind a pooler that drops NOTIFY.
    pub poll_interval: Duration,
    /// LISTEN for announcements (PostgreSQL). Off when a pooler would drop them anyway.
    pub listen: bool,
}

impl Default for StoreConfig {
    /// Default backoff, 1 s poll, LISTEN on.
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            poll_interval: Duration::from_secs(1),
            listen: true,
        }
    }
}

/// Tasks, queue, projects, events and outbox on PostgreSQL or SQLite. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) db: Db,
    pub(crate) config: StoreConfig,
    pub(crate) clock: Arc<dyn Clock>,
    /// Bumped on every announcement; idle workers watch it.
    pub(crate) signal: Arc<watch::Sender<u64>>,
    /// Bumped after a commit that may have written a callback outbox row; this node's
    /// dispatcher watches it, so a callback leaves at once instead of at the next poll.
    pub(crate) outbox: watch::Sender<u64>,
    shutdown: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl SqlStore {
    /// A store on `db`. Queue time is the database server's clock on PostgreSQL (shared
    /// by every node; see [`DatabaseClock`]) and the system clock on SQLite. On PostgreSQL
    /// with `listen`, the LISTEN connection is up before this returns, so no announcement
    /// after it is missed.
    pub async fn new(db: Db, config: StoreConfig) -> Result<Self, DbError> {
        let shutdown = CancellationToken::new();
        let clock: Arc<dyn Clock> = match &db {
            // Refreshed until the store shuts down.
            Db::Postgres(pool) => {
                Arc::new(DatabaseClock::start(pool, shutdown.child_token()).await?)
            }
            Db::Sqlite(_) => Arc::new(SystemClock),
        };
        Self::assemble(db, config, clock, shutdown).await
    }

    /// A store whose queue decisions read `clock` (tests move time instead of sleeping).
    pub async fn with_clock(
        db: Db,
        config: StoreConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, DbError> {
        Self::assemble(db, config, clock, CancellationToken::new()).await
    }

    async fn assemble(
        db: Db,
        config: StoreConfig,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
    ) -> Result<Self, DbError> {
        let signal = Arc::new(watch::channel(0u64).0);
        if let (Db::Postgres(pool), true) = (&db, config.listen) {
            notify::start_listener(pool, signal.clone(), shutdown.child_token()).await?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                config,
                clock,
                signal,
                outbox: watch::channel(0u64).0,
                shutdown,
            }),
        })
    }

    /// Stops the LISTEN task (also done when the last clone is dropped).
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    /// Wakes this process's idle workers.
    pub(crate) fn announce(&self) {
        self.inner.signal.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Wakes this process's callback dispatcher: a commit may have written an outbox row.
    pub(crate) fn announce_outbox(&self) {
        self.inner.outbox.send_modify(|g| *g = g.wrapping_add(1));
    }

    pub(crate) fn is_postgres(&self) -> bool {
        self.inner.db.backend() == Backend::Postgres
    }
}

/// The error for a task id with no row.
pub(crate) fn not_found(id: TaskId) -> StoreError {
    StoreError::NotFound {
        what: "task",
        id: id.to_string(),
    }
}
