//! Test support: a fresh, migrated database per test on either backend. PostgreSQL gets
//! `CREATE DATABASE rdev_test_<uuid>` on the admin URL in `DATABASE_URL` (dropped again when
//! the test ends, even if it panics); SQLite gets a file in a temporary directory.

#![allow(dead_code)]

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use rdev_core::{BuildSpec, ManualClock, NewTask, ProjectName, RetryPolicy};
use rdev_store::{Backend, Db, SqlStore, StoreConfig};

pub use rdev_testkit::pg::{admin_url, with_database};

/// A migrated database that disappears with this value.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    pub db: Db,
    pub store: SqlStore,
    pub clock: ManualClock,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

/// The configuration tests use: 1 s backoff base, so delays are easy to reason about.
pub fn test_config() -> StoreConfig {
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
    /// A fresh database on `backend` with a manual clock.
    pub async fn fresh(backend: Backend) -> Self {
        let (url, dir, pg_name) = match backend {
            Backend::Postgres => {
                let admin = admin_url();
                let name = format!("rdev_test_{}", uuid::Uuid::new_v4().simple());
                let db = Db::connect(&admin).await.expect("connect to DATABASE_URL");
                if let Db::Postgres(p) = &db {
                    sqlx::query(&format!("CREATE DATABASE {name}"))
                        .execute(p)
                        .await
                        .expect("create test database");
                }
                db.close().await;
                (with_database(&admin, &name), None, Some(name))
            }
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite:{}", dir.path().join("rdev.db").display());
                (url, Some(dir), None)
            }
        };
        let db = Db::connect(&url)
            .await
            .expect("connect to the test database");
        db.migrate().await.expect("migrate");
        let clock = ManualClock::new(Utc::now());
        let store = SqlStore::with_clock(db.clone(), test_config(), Arc::new(clock.clone()))
            .await
            .expect("store");
        Self {
            backend,
            url,
            db,
            store,
            clock,
            _dir: dir,
            pg_name,
        }
    }

    /// A second store on the same database through its own pool (another node), sharing
    /// the manual clock.
    pub async fn another_store(&self, config: StoreConfig) -> SqlStore {
        let db = Db::connect(&self.url).await.unwrap();
        SqlStore::with_clock(db, config, Arc::new(self.clock.clone()))
            .await
            .unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        self.store.shutdown();
        // Drop runs outside async context: use a private runtime on a plain thread.
        let admin = admin_url();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(Db::Postgres(p)) = Db::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&p)
                        .await;
                    p.close().await;
                }
            });
        })
        .join();
    }
}

/// A project name for tests.
pub fn project(name: &str) -> ProjectName {
    ProjectName::parse(name).unwrap()
}

/// A task in project `site` with `prompt`.
pub fn task(prompt: &str) -> NewTask {
    NewTask::new(project("site"), BuildSpec::new(prompt))
}

/// A task whose spec asks for a callback.
pub fn task_with_callback(prompt: &str) -> NewTask {
    let mut t = task(prompt);
    t.spec.callback_url = Some("https://bot.example/callback".into());
    t
}

/// Instantiates each named `async fn(TestDb)` once per backend, as
/// `<name>::postgres` and `<name>::sqlite`, each on a fresh database.
#[macro_export]
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name(
                        $crate::common::TestDb::fresh(rdev_store::Backend::Postgres).await,
                    )
                    .await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::common::TestDb::fresh(rdev_store::Backend::Sqlite).await)
                        .await
                }
            }
        )*
    };
}
