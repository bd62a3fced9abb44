//! The [`ProjectStore`] and [`OutboxStore`] ports on [`SqlStore`]: project rows by name,
//! and the bookkeeping of callback deliveries. The outbox rows themselves are written by
//! the queue in the transaction that finishes a task; this module only reads and marks
//! them. It must not send HTTP or sign anything.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rdev_core::{OutboxRow, OutboxStore, Project, ProjectName, ProjectStore, StoreError, TaskId};

use crate::{
    sql::{db_err, on_pool, BeginWrite, OutboxDbRow, ProjectRow, Ts, OUTBOX_COLS},
    store::SqlStore,
};

const PROJECT_COLS: &str =
    "name, repo_url, default_branch, template, woodpecker_repo_id, deploy_url_pattern, provider, secrets";

fn project_not_found(name: &str) -> StoreError {
    StoreError::NotFound {
        what: "project",
        id: name.to_owned(),
    }
}

impl SqlStore {
    /// Runs `sql` with the project's fields as `$1..$7`, now as `$8` and the secrets plan
    /// as `$9`; rows affected.
    async fn write_project(&self, sql: &str, p: &Project) -> Result<u64, sqlx::Error> {
        let now = Ts::from(self.now());
        Ok(on_pool!(&self.inner.db, pool => {
            sqlx::query(sql)
                .bind(p.name.as_str())
                .bind(&p.repo_url)
                .bind(&p.default_branch)
                .bind(p.template.as_deref())
                .bind(p.woodpecker_repo_id)
                .bind(p.deploy_url_pattern.as_deref())
                .bind(p.provider.as_ref().map(|v| v.as_str()))
                .bind(now)
                .bind(sqlx::types::Json(&p.secrets))
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }
}

#[async_trait]
impl ProjectStore for SqlStore {
    async fn create_project(&self, p: &Project) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO projects ({PROJECT_COLS}, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $9, $8, $8)"
        );
        self.write_project(&sql, p)
            .await
            .map_err(|e| match db_err(e) {
                StoreError::Conflict(_) => {
                    StoreError::Conflict(format!("project {} already exists", p.name))
                }
                other => other,
            })?;
        Ok(())
    }

    async fn get_project(&self, name: &ProjectName) -> Result<Project, StoreError> {
        let sql = format!("SELECT {PROJECT_COLS} FROM projects WHERE name = $1");
        let row: Option<ProjectRow> = on_pool!(&self.inner.db, pool => {
            sqlx::query_as(&sql).bind(name.as_str()).fetch_optional(pool).await.map_err(db_err)?
        });
        row.ok_or_else(|| project_not_found(name.as_str()))?
            .into_project()
    }

    async fn list_projects(&self) -> Result<Vec<Project>, StoreError> {
        let sql = format!("SELECT {PROJECT_COLS} FROM projects ORDER BY name");
        let rows: Vec<ProjectRow> = on_pool!(&self.inner.db, pool => {
            sqlx::query_as(&sql).fetch_all(pool).await.map_err(db_err)?
        });
        rows.into_iter().map(ProjectRow::into_project).collect()
    }

    async fn update_project(&self, p: &Project) -> Result<(), StoreError> {
        let sql = "UPDATE projects SET repo_url = $2, default_branch = $3, template = $4, \
                   woodpecker_repo_id = $5, deploy_url_pattern = $6, provider = $7, \
                   secrets = $9, updated_at = $8 WHERE name = $1";
        if self.write_project(sql, p).await.map_err(db_err)? == 0 {
            return Err(project_not_found(p.name.as_str()));
        }
        Ok(())
    }

    async fn delete_project(&self, name: &ProjectName) -> Result<(), StoreError> {
        let n = on_pool!(&self.inner.db, pool => {
            sqlx::query("DELETE FROM projects WHERE name = $1")
                .bind(name.as_str())
                .execute(pool)
                .await
                .map_err(db_err)?
                .rows_affected()
        });
        if n == 0 {
            return Err(project_not_found(name.as_str()));
        }
        Ok(())
    }
}

fn outbox_not_found(id: i64) -> StoreError {
    StoreError::NotFound {
        what: "outbox row",
        id: id.to_string(),
    }
}

#[async_trait]
impl OutboxStore for SqlStore {
    async fn claim_due(&self, limit: u32, hold: Duration) -> Result<Vec<OutboxRow>, StoreError> {
        let now = self.now();
        let until = now + crate::queue::chrono_dur(hold);
        let pick = "SELECT id AS picked_id FROM callback_outbox WHERE delivered_at IS NULL \
                    AND expired_at IS NULL AND next_attempt_at <= $1 \
                    ORDER BY next_attempt_at, id LIMIT $2";
        let sql = if self.is_postgres() {
            format!(
                "WITH due AS ({pick} FOR UPDATE SKIP LOCKED) UPDATE callback_outbox \
                 SET next_attempt_at = $3 FROM due WHERE id = due.picked_id RETURNING {OUTBOX_COLS}"
            )
        } else {
            format!(
                "UPDATE callback_outbox SET next_attempt_at = $3 WHERE id IN ({}) \
                 RETURNING {OUTBOX_COLS}",
                pick.replace("id AS picked_id", "id")
            )
        };
        let mut rows: Vec<OutboxDbRow> = on_pool!(&self.inner.db, pool => {
            let mut tx = pool.begin_write().await.map_err(db_err)?;
            let rows = sqlx::query_as(&sql)
                .bind(Ts::from(now))
                .bind(i64::from(limit))
                .bind(Ts::from(until))
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
            rows
        });
        rows.sort_by_key(|r| r.id);
        Ok(rows.into_iter().map(OutboxRow::from).collect())
    }

    async fn mark_delivered(&self, id: i64) -> Result<(), StoreError> {
        let now = Ts::from(self.now());
        let n = on_pool!(&self.inner.db, pool => {
            sqlx::query(
                "UPDATE callback_outbox SET delivered_at = $2, attempts = attempts + 1, \
                 last_error = NULL WHERE id = $1",
            )
            .bind(id)
            .bind(now)
            .execute(pool)
            .await
            .map_err(db_err)?
            .rows_affected()
        });
        if n == 0 {
            return Err(outbox_not_found(id));
        }
        Ok(())
    }

    async fn mark_failed(
        &self,
        id: i64,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let now = Ts::from(self.now());
        let (next, expired) = match retry_at {
            Some(t) => (Some(Ts::from(t)), None),
            None => (None, Some(now)),
        };
        let n = on_pool!(&self.inner.db, pool => {
            sqlx::query(
                "UPDATE callback_outbox SET attempts = attempts + 1, last_error = $2, \
                 next_attempt_at = COALESCE($3, next_attempt_at), expired_at = $4 WHERE id = $1",
            )
            .bind(id)
            .bind(error)
            .bind(next)
            .bind(expired)
            .execute(pool)
            .await
            .map_err(db_err)?
            .rows_affected()
        });
        if n == 0 {
            return Err(outbox_not_found(id));
        }
        Ok(())
    }

    async fn outbox_for_task(&self, id: TaskId) -> Result<Vec<OutboxRow>, StoreError> {
        let sql =
            format!("SELECT {OUTBOX_COLS} FROM callback_outbox WHERE task_id = $1 ORDER BY id");
        let rows: Vec<OutboxDbRow> = on_pool!(&self.inner.db, pool => {
            sqlx::query_as(&sql).bind(id.0).fetch_all(pool).await.map_err(db_err)?
        });
        Ok(rows.into_iter().map(OutboxRow::from).collect())
    }
}
