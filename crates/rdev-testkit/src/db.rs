//! One test database type for every crate's tests: a fresh, migrated database per test on
//! either backend (PostgreSQL via [`crate::pg::PgDatabase`], dropped when the test ends even
//! if it panics; SQLite in a temporary directory), with a store on a manual clock, and the
//! [`both_backends!`](crate::both_backends) macro that runs one test body on both. It holds
//! no test logic and no assertions of its own.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use rdev_core::{ManualClock, RetryPolicy};
pub use rdev_store::Backend;
use rdev_store::{Db, SqlStore, StoreConfig};

use crate::pg::PgDatabase;

/// A migrated database, a store on it and a temporary directory; all removed with this value.
pub struct TestDb {
    /// Which backend this database is on.
    pub backend: Backend,
    /// Connection URL of the database.
    pub url: String,
    /// A pool on the database.
    pub db: Db,
    /// A store on [`Self::db`] whose queue time is [`Self::clock`].
    pub store: SqlStore,
    /// The manual clock [`Self::store`] reads.
    pub clock: ManualClock,
    /// A scratch directory (the SQLite file lives here; tests put key files and data here).
    pub dir: tempfile::TempDir,
    // Last, so the database is dropped after every pool on it.
    _pg: Option<PgDatabase>,
}

/// The store configuration tests use: 1 s backoff base, so delays are easy to reason about.
pub fn test_store_config() -> StoreConfig {
    StoreConfig {
        retry: RetryPolicy {
            base: Duration::from_secs(1),
            cap: RetryPolicy::DEFAULT_CAP,
            jitter: 0.2,
        },
        poll_interval: Duration::from_secs(1),
        listen: true,
    }
}

impl TestDb {
    /// A fresh database on `backend` with a store on a manual clock standing at now.
    pub async fn fresh(backend: Backend) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let pg = match backend {
            Backend::Postgres => Some(PgDatabase::create().await),
            Backend::Sqlite => None,
        };
        let url = match &pg {
            Some(pg) => pg.url.clone(),
            None => format!("sqlite:{}", dir.path().join("rdev.db").display()),
        };
        let db = Db::connect(&url)
            .await
            .expect("connect to the test database");
        db.migrate().await.expect("migrate");
        let clock = ManualClock::new(Utc::now());
        let store = SqlStore::with_clock(db.clone(), test_store_config(), Arc::new(clock.clone()))
            .await
            .expect("store");
        Self {
            backend,
            url,
            db,
            store,
            clock,
            dir,
            _pg: pg,
        }
    }

    /// A second store on the same database through its own pool (another node), sharing
    /// the manual clock.
    pub async fn another_store(&self, config: StoreConfig) -> SqlStore {
        let db = Db::connect(&self.url).await.expect("connect again");
        SqlStore::with_clock(db, config, Arc::new(self.clock.clone()))
            .await
            .expect("store")
    }
}

impl std::fmt::Debug for TestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDb")
            .field("backend", &self.backend)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Stops the LISTEN task before the database goes.
        self.store.shutdown();
    }
}

/// Runs `sql` (one statement, `$1` bound to `blob` if given) on whichever backend `db` is.
pub async fn exec(db: &Db, sql: &str, blob: Option<Vec<u8>>) {
    match db {
        Db::Postgres(p) => {
            let mut q = sqlx::query(sql);
            if let Some(b) = blob {
                q = q.bind(b);
            }
            q.execute(p).await.expect("execute");
        }
        Db::Sqlite(p) => {
            let mut q = sqlx::query(sql);
            if let Some(b) = blob {
                q = q.bind(b);
            }
            q.execute(p).await.expect("execute");
        }
    }
}

/// Instantiates each named `async fn(TestDb)` once per backend, as `<name>::postgres` and
/// `<name>::sqlite`, each on a fresh [`TestDb`]. The calling crate needs `tokio` (with the
/// `macros` and multi-thread runtime features) among its dependencies.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name(
                        $crate::db::TestDb::fresh($crate::db::Backend::Postgres).await,
                    )
                    .await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::db::TestDb::fresh($crate::db::Backend::Sqlite).await)
                        .await
                }
            }
        )*
    };
}
