//! [`SqlSecretRepository`]: the [`SecretRepository`] port on either backend, over the
//! `secrets`, `secret_audit` and `master_key_check` tables. It stores and returns sealed
//! rows exactly as given; it must never see a key or a plaintext value, and it must not
//! log row contents. Writes that belong together (a version and its audit row, a whole key
//! rotation) each run in one transaction.

use crate::{
    db::{Backend, Db},
    sql::{corrupt, db_err, on_pool, BeginWrite, Ts},
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rdev_core::{
    AuditEntry, AuditFilter, KeyCheck, Rotation, SealedSecret, SecretMeta, SecretName,
    SecretRepository, SecretScope, StoreError,
};

/// Audit rows returned when the filter does not say.
const DEFAULT_AUDIT_LIMIT: u32 = 100;

/// Sealed secrets, the key check and the audit log in the rdev database.
#[derive(Debug, Clone)]
pub struct SqlSecretRepository {
    db: Db,
}

impl SqlSecretRepository {
    /// A repository on `db` (already migrated).
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

#[derive(sqlx::FromRow)]
struct SecretRow {
    scope: String,
    name: String,
    version: i32,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
    created_at: Ts,
}

impl SecretRow {
    fn into_sealed(self) -> Result<SealedSecret, StoreError> {
        Ok(SealedSecret {
            scope: parse_scope(&self.scope)?,
            name: parse_name(&self.name)?,
            version: to_version(self.version)?,
            nonce: self.nonce,
            ciphertext: self.ciphertext,
            created_at: self.created_at.0,
        })
    }
}

#[derive(sqlx::FromRow)]
struct MetaRow {
    scope: String,
    name: String,
    version: i32,
    created_at: Ts,
    last_used_at: Option<Ts>,
}

#[derive(sqlx::FromRow)]
struct CheckRow {
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
    created_at: Ts,
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    at: Ts,
    scope: String,
    name: String,
    version: Option<i32>,
    action: String,
    actor: String,
    detail: Option<String>,
}

fn parse_scope(s: &str) -> Result<SecretScope, StoreError> {
    SecretScope::parse(s).map_err(corrupt)
}

fn parse_name(s: &str) -> Result<SecretName, StoreError> {
    SecretName::parse(s).map_err(corrupt)
}

fn to_version(v: i32) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| corrupt(format!("negative secret version {v}")))
}

pub(crate) fn from_version(v: u32) -> Result<i32, StoreError> {
    i32::try_from(v).map_err(|_| StoreError::Conflict(format!("secret version {v} is too large")))
}

pub(crate) const AUDIT_INSERT: &str =
    "INSERT INTO secret_audit (at, scope, name, version, action, actor, \
     detail) VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// Inserts one audit row through `$exec` (a pool or a transaction) of either backend. Also
/// used by a project's deletion, which deletes the project's secrets in its transaction.
macro_rules! insert_audit {
    ($exec:expr, $entry:expr) => {{
        let e: &::rdev_core::AuditEntry = $entry;
        let version = e.version.map($crate::secrets::from_version).transpose()?;
        sqlx::query($crate::secrets::AUDIT_INSERT)
            .bind($crate::sql::Ts::from(e.at))
            .bind(e.scope.to_string())
            .bind(e.name.as_str())
            .bind(version)
            .bind(e.action.as_str())
            .bind(e.actor.as_str())
            .bind(e.detail.as_deref())
            .execute($exec)
            .await
            .map_err($crate::sql::db_err)
            .map(|_| ())
    }};
}
pub(crate) use insert_audit;

fn changed_meanwhile(what: &str) -> StoreError {
    StoreError::Conflict(format!(
        "{what} changed while the key rotation ran; nothing was rotated, run it again"
    ))
}

#[async_trait]
impl SecretRepository for SqlSecretRepository {
    async fn key_check(&self) -> Result<Option<KeyCheck>, StoreError> {
        let row: Option<CheckRow> = on_pool!(&self.db, pool => {
            sqlx::query_as("SELECT nonce, ciphertext, created_at FROM master_key_check WHERE id = 1")
                .fetch_optional(pool)
                .await
                .map_err(db_err)?
        });
        Ok(row.map(|r| KeyCheck {
            nonce: r.nonce,
            ciphertext: r.ciphertext,
            created_at: r.created_at.0,
        }))
    }

    async fn init_key_check(&self, check: &KeyCheck) -> Result<bool, StoreError> {
        let n = on_pool!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO master_key_check (id, nonce, ciphertext, created_at) \
                 VALUES (1, $1, $2, $3) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&check.nonce)
            .bind(&check.ciphertext)
            .bind(Ts::from(check.created_at))
            .execute(pool)
            .await
            .map_err(db_err)?
            .rows_affected()
        });
        Ok(n == 1)
    }

    async fn latest_version(
        &self,
        scope: &SecretScope,
        name: &SecretName,
    ) -> Result<Option<u32>, StoreError> {
        let v: Option<i32> = on_pool!(&self.db, pool => {
            sqlx::query_scalar("SELECT MAX(version) FROM secrets WHERE scope = $1 AND name = $2")
                .bind(scope.to_string())
                .bind(name.as_str())
                .fetch_one(pool)
                .await
                .map_err(db_err)?
        });
        v.map(to_version).transpose()
    }

    async fn insert_version(
        &self,
        s: &SealedSecret,
        audit: &AuditEntry,
        key_check: &[u8],
    ) -> Result<(), StoreError> {
        let version = from_version(s.version)?;
        on_pool!(&self.db, pool => {
            let mut tx = pool.begin_write().await.map_err(db_err)?;
            sqlx::query(
                "INSERT INTO secrets (scope, name, version, nonce, ciphertext, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(s.scope.to_string())
            .bind(s.name.as_str())
            .bind(version)
            .bind(&s.nonce)
            .bind(&s.ciphertext)
            .bind(Ts::from(s.created_at))
            .execute(&mut *tx)
            .await
            .map_err(|e| match db_err(e) {
                StoreError::Conflict(_) => StoreError::Conflict(format!(
                    "secret {} {} version {} already exists",
                    s.scope, s.name, s.version
                )),
                other => other,
            })?;
            // Checked after the insert: on PostgreSQL the insert waits for a running
            // rotation (which locks `secrets`), so this read sees the key it committed.
            let current: Option<Vec<u8>> =
                sqlx::query_scalar("SELECT ciphertext FROM master_key_check WHERE id = 1")
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err)?;
            if current.as_deref() != Some(key_check) {
                return Err(StoreError::Conflict(
                    "the master key was rotated by another process".to_owned(),
                ));
            }
            insert_audit!(&mut *tx, audit)?;
            tx.commit().await.map_err(db_err)?;
        });
        Ok(())
    }

    async fn get_latest(
        &self,
        scope: &SecretScope,
        name: &SecretName,
    ) -> Result<Option<SealedSecret>, StoreError> {
        let row: Option<SecretRow> = on_pool!(&self.db, pool => {
            sqlx::query_as(
                "SELECT scope, name, version, nonce, ciphertext, created_at FROM secrets \
                 WHERE scope = $1 AND name = $2 ORDER BY version DESC LIMIT 1",
            )
            .bind(scope.to_string())
            .bind(name.as_str())
            .fetch_optional(pool)
            .await
            .map_err(db_err)?
        });
        row.map(SecretRow::into_sealed).transpose()
    }

    async fn list(&self, scope: Option<&SecretScope>) -> Result<Vec<SecretMeta>, StoreError> {
        let scope = scope.map(ToString::to_string);
        let rows: Vec<MetaRow> = on_pool!(&self.db, pool => {
            sqlx::query_as(
                "SELECT s.scope, s.name, s.version, s.created_at, s.last_used_at FROM secrets s \
                 WHERE ($1 IS NULL OR s.scope = $1) AND s.version = \
                 (SELECT MAX(m.version) FROM secrets m WHERE m.scope = s.scope AND m.name = s.name) \
                 ORDER BY s.scope, s.name",
            )
            .bind(scope.as_deref())
            .fetch_all(pool)
            .await
            .map_err(db_err)?
        });
        rows.into_iter()
            .map(|r| {
                Ok(SecretMeta {
                    scope: parse_scope(&r.scope)?,
                    name: parse_name(&r.name)?,
                    version: to_version(r.version)?,
                    created_at: r.created_at.0,
                    last_used_at: r.last_used_at.map(|t| t.0),
                })
            })
            .collect()
    }

    async fn delete(
        &self,
        scope: &SecretScope,
        name: &SecretName,
        audit: &AuditEntry,
    ) -> Result<u64, StoreError> {
        let n = on_pool!(&self.db, pool => {
            let mut tx = pool.begin_write().await.map_err(db_err)?;
            let n = sqlx::query("DELETE FROM secrets WHERE scope = $1 AND name = $2")
                .bind(scope.to_string())
                .bind(name.as_str())
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected();
            if n > 0 {
                insert_audit!(&mut *tx, audit)?;
                tx.commit().await.map_err(db_err)?;
            }
            n
        });
        if n == 0 {
            return Err(StoreError::NotFound {
                what: "secret",
                id: format!("{scope}/{name}"),
            });
        }
        Ok(n)
    }

    async fn record_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        on_pool!(&self.db, pool => insert_audit!(pool, entry))
    }

    async fn audit_log(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        let limit = i64::from(if f.limit == 0 {
            DEFAULT_AUDIT_LIMIT
        } else {
            f.limit
        });
        let scope = f.scope.as_ref().map(ToString::to_string);
        let rows: Vec<AuditRow> = on_pool!(&self.db, pool => {
            sqlx::query_as(
                "SELECT at, scope, name, version, action, actor, detail FROM secret_audit \
                 WHERE ($1 IS NULL OR scope = $1) AND ($2 IS NULL OR name = $2) \
                 ORDER BY id DESC LIMIT $3",
            )
            .bind(scope.as_deref())
            .bind(f.name.as_ref().map(SecretName::as_str))
            .bind(limit)
            .fetch_all(pool)
            .await
            .map_err(db_err)?
        });
        rows.into_iter()
            .map(|r| {
                Ok(AuditEntry {
                    at: r.at.0,
                    scope: parse_scope(&r.scope)?,
                    name: parse_name(&r.name)?,
                    version: r.version.map(to_version).transpose()?,
                    action: r.action.parse().map_err(corrupt)?,
                    actor: r.actor,
                    detail: r.detail,
                })
            })
            .collect()
    }

    async fn mark_used(
        &self,
        scope: &SecretScope,
        name: &SecretName,
        version: u32,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let version = from_version(version)?;
        on_pool!(&self.db, pool => {
            sqlx::query(
                "UPDATE secrets SET last_used_at = $4 WHERE scope = $1 AND name = $2 AND version = $3",
            )
            .bind(scope.to_string())
            .bind(name.as_str())
            .bind(version)
            .bind(Ts::from(at))
            .execute(pool)
            .await
            .map_err(db_err)?;
        });
        Ok(())
    }

    async fn load_all(&self) -> Result<Vec<SealedSecret>, StoreError> {
        let rows: Vec<SecretRow> = on_pool!(&self.db, pool => {
            sqlx::query_as(
                "SELECT scope, name, version, nonce, ciphertext, created_at FROM secrets \
                 ORDER BY scope, name, version",
            )
            .fetch_all(pool)
            .await
            .map_err(db_err)?
        });
        rows.into_iter().map(SecretRow::into_sealed).collect()
    }

    async fn replace_all(&self, r: &Rotation) -> Result<(), StoreError> {
        // SQLite's BEGIN IMMEDIATE already excludes other writers; PostgreSQL needs the
        // tables locked against concurrent inserts, updates and deletes.
        let lock = match self.db.backend() {
            Backend::Postgres => {
                Some("LOCK TABLE secrets, master_key_check IN SHARE ROW EXCLUSIVE MODE")
            }
            Backend::Sqlite => None,
        };
        on_pool!(&self.db, pool => {
            let mut tx = pool.begin_write().await.map_err(db_err)?;
            if let Some(lock) = lock {
                sqlx::query(lock).execute(&mut *tx).await.map_err(db_err)?;
            }
            let n = sqlx::query(
                "UPDATE master_key_check SET nonce = $1, ciphertext = $2, created_at = $3 \
                 WHERE id = 1 AND ciphertext = $4",
            )
            .bind(&r.new_check.nonce)
            .bind(&r.new_check.ciphertext)
            .bind(Ts::from(r.new_check.created_at))
            .bind(&r.old_check.ciphertext)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
            if n != 1 {
                return Err(changed_meanwhile("the master key check"));
            }
            for row in &r.rows {
                let n = sqlx::query(
                    "UPDATE secrets SET nonce = $4, ciphertext = $5 \
                     WHERE scope = $1 AND name = $2 AND version = $3 AND ciphertext = $6",
                )
                .bind(row.scope.to_string())
                .bind(row.name.as_str())
                .bind(from_version(row.version)?)
                .bind(&row.nonce)
                .bind(&row.ciphertext)
                .bind(&row.old_ciphertext)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected();
                if n != 1 {
                    return Err(changed_meanwhile(&format!(
                        "secret {} {} version {}",
                        row.scope, row.name, row.version
                    )));
                }
            }
            let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM secrets")
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)?;
            if usize::try_from(total).ok() != Some(r.rows.len()) {
                return Err(changed_meanwhile("the set of secrets"));
            }
            for entry in &r.audit {
                insert_audit!(&mut *tx, entry)?;
            }
            tx.commit().await.map_err(db_err)?;
        });
        Ok(())
    }
}
