//! [`SqlTokenStore`]: the [`TokenStore`] port on either backend, over the `api_tokens`
//! table. It stores and finds hashes as given; it never sees a token, and it must not log
//! hashes. Revoking deletes the row, so a revoked token can never match again.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rdev_core::{ApiToken, ProjectName, StoreError, TokenHash, TokenName, TokenScope, TokenStore};
use sqlx::types::Json;

use crate::{
    db::Db,
    sql::{corrupt, db_err, on_pool, Ts},
};

const TOKEN_COLS: &str = "name, scope, projects, created_at, last_used_at";

/// API tokens in the rdev database.
#[derive(Debug, Clone)]
pub struct SqlTokenStore {
    db: Db,
}

impl SqlTokenStore {
    /// A token store on `db` (already migrated).
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    name: String,
    scope: String,
    projects: Json<Vec<String>>,
    created_at: Ts,
    last_used_at: Option<Ts>,
}

impl TokenRow {
    fn into_token(self) -> Result<ApiToken, StoreError> {
        Ok(ApiToken {
            name: TokenName::parse(&self.name).map_err(corrupt)?,
            scope: self.scope.parse::<TokenScope>().map_err(corrupt)?,
            projects: self
                .projects
                .0
                .iter()
                .map(|p| ProjectName::parse(p))
                .collect::<Result<_, _>>()
                .map_err(corrupt)?,
            created_at: self.created_at.0,
            last_used_at: self.last_used_at.map(|t| t.0),
        })
    }
}

#[async_trait]
impl TokenStore for SqlTokenStore {
    async fn create_token(&self, token: &ApiToken, hash: &TokenHash) -> Result<(), StoreError> {
        let projects: Vec<&str> = token.projects.iter().map(ProjectName::as_str).collect();
        on_pool!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO api_tokens (name, token_hash, scope, projects, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(token.name.as_str())
            .bind(&hash.0[..])
            .bind(token.scope.as_str())
            .bind(Json(&projects))
            .bind(Ts::from(token.created_at))
            .execute(pool)
            .await
            .map_err(|e| match db_err(e) {
                StoreError::Conflict(_) => StoreError::Conflict(format!(
                    "an API token named {} already exists",
                    token.name
                )),
                other => other,
            })?;
        });
        Ok(())
    }

    async fn token_by_hash(&self, hash: &TokenHash) -> Result<Option<ApiToken>, StoreError> {
        let sql = format!("SELECT {TOKEN_COLS} FROM api_tokens WHERE token_hash = $1");
        let row: Option<TokenRow> = on_pool!(&self.db, pool => {
            sqlx::query_as(&sql)
                .bind(&hash.0[..])
                .fetch_optional(pool)
                .await
                .map_err(db_err)?
        });
        row.map(TokenRow::into_token).transpose()
    }

    async fn list_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        let sql = format!("SELECT {TOKEN_COLS} FROM api_tokens ORDER BY name");
        let rows: Vec<TokenRow> = on_pool!(&self.db, pool => {
            sqlx::query_as(&sql).fetch_all(pool).await.map_err(db_err)?
        });
        rows.into_iter().map(TokenRow::into_token).collect()
    }

    async fn revoke_token(&self, name: &TokenName) -> Result<(), StoreError> {
        let n = on_pool!(&self.db, pool => {
            sqlx::query("DELETE FROM api_tokens WHERE name = $1")
                .bind(name.as_str())
                .execute(pool)
                .await
                .map_err(db_err)?
                .rows_affected()
        });
        if n == 0 {
            return Err(StoreError::NotFound {
                what: "API token",
                id: name.to_string(),
            });
        }
        Ok(())
    }

    async fn mark_token_used(&self, name: &TokenName, at: DateTime<Utc>) -> Result<(), StoreError> {
        on_pool!(&self.db, pool => {
            sqlx::query(
                "UPDATE api_tokens SET last_used_at = $2 \
                 WHERE name = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
            )
            .bind(name.as_str())
            .bind(Ts::from(at))
            .execute(pool)
            .await
            .map_err(db_err)?;
        });
        Ok(())
    }

    async fn has_tokens(&self) -> Result<bool, StoreError> {
        // COUNT over at most one row: an i64 on both backends, and no full scan.
        let n: i64 = on_pool!(&self.db, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM (SELECT 1 FROM api_tokens LIMIT 1) AS t")
                .fetch_one(pool)
                .await
                .map_err(db_err)?
        });
        Ok(n > 0)
    }
}
