//! Shared test support: start the real application on port 0 with its own database.
#![allow(dead_code)]

use rdev_server::{Application, Config};
use tokio_util::sync::CancellationToken;

/// A running rdev on a free port.
pub struct TestApp {
    pub address: String,
    pub shutdown: CancellationToken,
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub _dir: tempfile::TempDir,
}

/// Starts rdev on 127.0.0.1:0 with a fresh SQLite database (or `database_url` if given).
pub async fn spawn_app_with(database_url: Option<String>) -> TestApp {
    spawn_app_configured(database_url, |_| {}).await
}

/// Like [`spawn_app_with`], letting the test change the configuration first.
pub async fn spawn_app_configured(
    database_url: Option<String>,
    tweak: impl FnOnce(&mut Config),
) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: database_url
            .unwrap_or_else(|| format!("sqlite:{}", dir.path().join("rdev.db").display())),
        data_dir: dir.path().join("data"),
        // API tests run no worker (no agent ever starts) unless a test asks for one.
        worker_concurrency: 0,
        ..Config::default()
    };
    config.agents.enabled = vec!["claude-code".into()];
    tweak(&mut config);
    let app = Application::build(config).await.expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let shutdown = app.shutdown_token();
    let handle = tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        shutdown,
        handle,
        _dir: dir,
    }
}

/// Starts rdev on a fresh SQLite database.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(None).await
}

/// The admin URL of the test PostgreSQL (set by scripts/test).
pub fn pg_admin_url() -> String {
    std::env::var("DATABASE_URL").expect(
        "DATABASE_URL is not set: run the suite with scripts/test, which provides PostgreSQL",
    )
}

/// A fresh, empty PostgreSQL database; returns its URL.
pub async fn fresh_pg_database() -> String {
    use sqlx::{Connection, Executor};
    let admin = pg_admin_url();
    let name = format!("rdev_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connect to the admin database");
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create test database");
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    let base = base.split('?').next().unwrap_or(base);
    format!("{base}/{name}")
}
