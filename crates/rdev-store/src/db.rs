//! [`Db`]: one connection pool for either backend, chosen by the URL scheme
//! (`postgres://` / `postgresql://` or `sqlite:`). Everything above it asks the pool for
//! its [`Backend`] only where SQL differs.

use std::{str::FromStr, time::Duration};

use sqlx::{
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
    },
};

/// Which database a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    /// `postgres` or `sqlite`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Sqlite => "sqlite",
        }
    }
}

/// Database errors with a stable code for the API layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("unsupported database URL {0:?}: use postgres://... or sqlite:PATH")]
    UnsupportedUrl(String),
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl rdev_core::ErrorCode for DbError {
    fn code(&self) -> &'static str {
        match self {
            Self::UnsupportedUrl(_) => "unsupported_database_url",
            Self::Sqlx(_) => "database_error",
            Self::Migrate(_) => "migration_failed",
        }
    }
}

/// A pool on one of the two backends.
#[derive(Debug, Clone)]
pub enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

impl Db {
    /// Connects to `url`. A SQLite file is created if missing and opened in WAL mode with a
    /// busy timeout, so the API and workers in one process can share it.
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(20)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await?;
            Ok(Self::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .connect_with(opts)
                .await?;
            Ok(Self::Sqlite(pool))
        } else {
            Err(DbError::UnsupportedUrl(redact_url(url)))
        }
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self {
            Self::Postgres(_) => Backend::Postgres,
            Self::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// A round trip to the database (`SELECT 1`), for readiness checks.
    pub async fn ping(&self) -> Result<(), DbError> {
        match self {
            Self::Postgres(p) => sqlx::query("SELECT 1").execute(p).await.map(|_| ()),
            Self::Sqlite(p) => sqlx::query("SELECT 1").execute(p).await.map(|_| ()),
        }
        .map_err(DbError::from)
    }

    /// Brings the schema up to date (`migrations/postgres` or `migrations/sqlite`, embedded
    /// at build time). Safe to run from several processes at once: sqlx serialises them
    /// with a lock. Run by `rdev migrate` and at `serve` start.
    pub async fn migrate(&self) -> Result<(), DbError> {
        match self {
            Self::Postgres(p) => sqlx::migrate!("./migrations/postgres").run(p).await?,
            Self::Sqlite(p) => sqlx::migrate!("./migrations/sqlite").run(p).await?,
        }
        Ok(())
    }

    /// Which of this build's migrations the database has applied, without changing
    /// anything (`rdev doctor`; [`Db::migrate`] applies them).
    pub async fn migration_status(&self) -> Result<MigrationStatus, DbError> {
        let (migrator, applied): (sqlx::migrate::Migrator, Vec<i64>) = match self {
            Self::Postgres(p) => {
                let exists: bool =
                    sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                        .fetch_one(p)
                        .await?;
                let applied = if exists {
                    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                        .fetch_all(p)
                        .await?
                } else {
                    Vec::new()
                };
                (sqlx::migrate!("./migrations/postgres"), applied)
            }
            Self::Sqlite(p) => {
                let exists: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' \
                     AND name = '_sqlx_migrations'",
                )
                .fetch_one(p)
                .await?;
                let applied = if exists > 0 {
                    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                        .fetch_all(p)
                        .await?
                } else {
                    Vec::new()
                };
                (sqlx::migrate!("./migrations/sqlite"), applied)
            }
        };
        let known: Vec<i64> = migrator
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .map(|m| m.version)
            .collect();
        Ok(MigrationStatus {
            pending: known
                .iter()
                .copied()
                .filter(|v| !applied.contains(v))
                .collect(),
            unknown: applied
                .iter()
                .copied()
                .filter(|v| !known.contains(v))
                .collect(),
            known: known.len(),
        })
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        match self {
            Self::Postgres(p) => p.close().await,
            Self::Sqlite(p) => p.close().await,
        }
    }
}

/// How a database's schema compares with this build's migrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    /// How many migrations this build has.
    pub known: usize,
    /// Versions this build has that the database has not applied.
    pub pending: Vec<i64>,
    /// Versions the database has applied that this build does not know (a newer rdev
    /// migrated it).
    pub unknown: Vec<i64>,
}

/// The URL with any password replaced, safe for error messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:[redacted]{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_url("postgres://rdev:s3cret@db:5432/rdev"),
            "postgres://rdev:[redacted]@db:5432/rdev"
        );
        assert_eq!(redact_url("sqlite:rdev.db"), "sqlite:rdev.db");
        assert_eq!(redact_url("postgres://rdev@db/x"), "postgres://rdev@db/x");
    }

    #[tokio::test]
    async fn sqlite_file_is_created_and_answers_ping() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("t.db").display());
        let db = Db::connect(&url).await.unwrap();
        assert_eq!(db.backend(), Backend::Sqlite);
        db.ping().await.unwrap();
        assert!(dir.path().join("t.db").exists());
    }

    #[tokio::test]
    async fn migration_status_says_what_is_pending_without_migrating() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("m.db").display());
        let db = Db::connect(&url).await.unwrap();
        let fresh = db.migration_status().await.unwrap();
        assert!(fresh.known > 0);
        assert_eq!(fresh.pending.len(), fresh.known);
        assert_eq!(
            db.migration_status().await.unwrap(),
            fresh,
            "nothing was applied"
        );
        db.migrate().await.unwrap();
        let current = db.migration_status().await.unwrap();
        assert!(
            current.pending.is_empty() && current.unknown.is_empty(),
            "{current:?}"
        );
    }

    #[tokio::test]
    async fn unknown_scheme_is_a_clear_error() {
        let err = Db::connect("mysql://u:pw@h/db").await.unwrap_err();
        assert!(matches!(err, DbError::UnsupportedUrl(_)));
        assert!(!err.to_string().contains("pw"));
    }
}
