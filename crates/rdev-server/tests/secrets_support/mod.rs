//! Test support for the credential store tests: a fresh, migrated database per test on
//! either backend (PostgreSQL from the admin URL in `DATABASE_URL`, dropped when the test
//! ends; SQLite in a temporary directory), and a macro that runs one test body on both.
#![allow(dead_code)]

use rdev_store::{Backend, Db};

use rdev_testkit::pg::PgDatabase;

/// A migrated database that is removed with this value.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    pub db: Db,
    pub dir: tempfile::TempDir,
    _pg: Option<PgDatabase>,
}

impl TestDb {
    /// A fresh database on `backend`.
    pub async fn fresh(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
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
        Self {
            backend,
            url,
            db,
            dir,
            _pg: pg,
        }
    }
}

/// Instantiates each named `async fn(TestDb)` once per backend, as `<name>::postgres` and
/// `<name>::sqlite`, each on a fresh database.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name(
                        $crate::secrets_support::TestDb::fresh(rdev_store::Backend::Postgres).await,
                    )
                    .await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(
                        $crate::secrets_support::TestDb::fresh(rdev_store::Backend::Sqlite).await,
                    )
                    .await
                }
            }
        )*
    };
}

/// Runs `sql` (one statement, binds `$1`.. as given) on whichever backend `db` is.
pub async fn exec(db: &Db, sql: &str, blob: Option<Vec<u8>>) {
    match db {
        Db::Postgres(p) => {
            let mut q = sqlx::query(sql);
            if let Some(b) = blob {
                q = q.bind(b);
            }
            q.execute(p).await.unwrap();
        }
        Db::Sqlite(p) => {
            let mut q = sqlx::query(sql);
            if let Some(b) = blob {
                q = q.bind(b);
            }
            q.execute(p).await.unwrap();
        }
    }
}
