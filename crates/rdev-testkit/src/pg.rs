//! Fresh PostgreSQL databases for tests: `CREATE DATABASE rdev_test_<uuid>` on the admin
//! URL in `DATABASE_URL` (set by `scripts/test`), dropped again when the handle is dropped,
//! even if the test panics.

use sqlx::{Connection, Executor, PgConnection};

/// The admin URL of the test server, or a panic that says how to get one.
pub fn admin_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "DATABASE_URL is not set: the PostgreSQL tests need an admin URL, e.g. \
             DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres (scripts/test sets it)"
        )
    })
}

/// `url` with its database name replaced by `name` (query string kept).
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{name}?{q}"),
        None => format!("{host_part}/{name}"),
    }
}

/// A new, empty database; dropped with this value.
#[derive(Debug)]
pub struct PgDatabase {
    /// Connection URL of the new database.
    pub url: String,
    name: String,
    admin: String,
}

impl PgDatabase {
    /// Creates a database on the server in `DATABASE_URL`.
    pub async fn create() -> Self {
        let admin = admin_url();
        let name = format!("rdev_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin)
            .await
            .expect("connect to DATABASE_URL");
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create a test database");
        let _ = conn.close().await;
        Self {
            url: with_database(&admin, &name),
            name,
            admin,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop may run inside a runtime; a thread with its own runtime keeps it simple.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = PgConnection::connect(&admin).await.ok()?;
                conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await
                    .ok()
            })
        })
        .join();
    }
}
