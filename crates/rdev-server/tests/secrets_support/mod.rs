//! Test support for the credential store tests: a fresh, migrated database per test on
//! either backend (PostgreSQL from the admin URL in `DATABASE_URL`, dropped when the test
//! ends; SQLite in a temporary directory), and a macro that runs one test body on both.
#![allow(dead_code)]

use rdev_store::{Backend, Db};

pub use rdev_testkit::pg::{admin_url, with_database};

/// A migrated database that is removed with this value.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    pub db: Db,
    pub dir: tempfile::TempDir,
    pg_name: Option<String>,
}

impl TestDb {
    /// A fresh database on `backend`.
    pub async fn fresh(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (url, pg_name) = match backend {
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
                (with_database(&admin, &name), Some(name))
            }
            Backend::Sqlite => (
                format!("sqlite:{}", dir.path().join("rdev.db").display()),
                None,
            ),
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
            pg_name,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        let admin = admin_url();
        // Drop runs outside async context: use a private runtime on a plain thread.
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
