//! The [`ProjectStore`] port on [`SqlStore`]: project rows by name. A project's deletion is
//! the one place that reaches into tasks and secrets: it cancels through the queue's own
//! [`CancelInTx`] and deletes the project's sealed secret rows (never reading one) with
//! their audit rows, all in one transaction (a failed creation is discarded by the same
//! transaction without the secrets and tokens). It must not send HTTP, sign anything or touch
//! files.

use async_trait::async_trait;
use rdev_core::{
    AuditAction, AuditEntry, Project, ProjectDeletion, ProjectName, ProjectStore, SecretName,
    SecretScope, StoreError, TaskId, TaskStatus,
};

use crate::{
    queue::CancelInTx,
    secrets::insert_audit,
    sql::{corrupt, db_err, on_pool, BeginWrite, ProjectRow, Ts},
    sql_store::SqlStore,
};

const PROJECT_COLS: &str = "name, repo_url, default_branch, template, woodpecker_repo_id, \
     deploy_url_pattern, provider, secrets, network_allow, max_cost_usd, max_tokens, \
     push_protection, push_protection_allow, woodpecker_repo, max_parallel_builds, created_repo";

/// Why an undelivered callback of a deleted project's task was given up on.
const DELETED_CALLBACK_ERROR: &str =
    "project deleted: its signing secret is gone, so the callback is not sent";

fn project_not_found(name: &str) -> StoreError {
    StoreError::NotFound {
        what: "project",
        id: name.to_owned(),
    }
}

impl SqlStore {
    /// Runs `sql` with the project's fields as `$1..$7`, now as `$8`, the secrets plan as
    /// `$9`, the gateway settings (`network_allow`, `max_cost_usd`, `max_tokens`) as
    /// `$10..$12`, push protection (`push_protection`, `push_protection_allow`) as
    /// `$13..$14`, `woodpecker_repo` as `$15`, `max_parallel_builds` as `$16` and, with
    /// `created_repo`, that field as `$17` (only an insert sets it); rows affected.
    async fn write_project(
        &self,
        sql: &str,
        p: &Project,
        created_repo: bool,
    ) -> Result<u64, sqlx::Error> {
        let now = Ts::from(self.now());
        Ok(on_pool!(&self.inner.db, pool => {
            let q = sqlx::query(sql)
                .bind(p.name.as_str())
                .bind(p.repo_url.as_str())
                .bind(p.default_branch.as_str())
                .bind(p.template.as_deref())
                .bind(p.woodpecker_repo_id)
                .bind(p.deploy_url_pattern.as_deref())
                .bind(p.provider.as_ref().map(|v| v.as_str()))
                .bind(now)
                .bind(sqlx::types::Json(&p.secrets))
                .bind(sqlx::types::Json(&p.network_allow))
                .bind(p.max_cost_usd)
                .bind(p.max_tokens.map(|t| i64::try_from(t).unwrap_or(i64::MAX)))
                .bind(p.push_protection.as_str())
                .bind(sqlx::types::Json(&p.push_protection_allow))
                .bind(p.woodpecker_repo.as_ref().map(|r| r.as_str()))
                .bind(i32::try_from(p.max_parallel_builds).unwrap_or(i32::MAX));
            let q = if created_repo { q.bind(p.created_repo.as_deref()) } else { q };
            q.execute(pool).await?.rows_affected()
        }))
    }
}

#[async_trait]
impl ProjectStore for SqlStore {
    async fn create_project(&self, p: &Project) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO projects ({PROJECT_COLS}, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $9, $10, $11, $12, $13, $14, $15, $16, $17, $8, \
             $8)"
        );
        self.write_project(&sql, p, true)
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
                   secrets = $9, network_allow = $10, max_cost_usd = $11, max_tokens = $12, \
                   push_protection = $13, push_protection_allow = $14, woodpecker_repo = $15, \
                   max_parallel_builds = $16, updated_at = $8 \
                   WHERE name = $1";
        if self.write_project(sql, p, false).await.map_err(db_err)? == 0 {
            return Err(project_not_found(p.name.as_str()));
        }
        Ok(())
    }

    async fn delete_project(
        &self,
        name: &ProjectName,
        actor: &str,
    ) -> Result<ProjectDeletion, StoreError> {
        self.remove_project(name, actor, Removal::Delete).await
    }

    async fn discard_project(&self, name: &ProjectName) -> Result<ProjectDeletion, StoreError> {
        self.remove_project(name, "rdev", Removal::Discard).await
    }
}

/// What removing a project takes with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Removal {
    /// A deletion: the project's secrets and its place in API tokens go too.
    Delete,
    /// A creation undone: secrets and tokens stay (they may predate the project).
    Discard,
}

impl SqlStore {
    /// The transaction behind [`ProjectStore::delete_project`] and
    /// [`ProjectStore::discard_project`].
    async fn remove_project(
        &self,
        name: &ProjectName,
        actor: &str,
        removal: Removal,
    ) -> Result<ProjectDeletion, StoreError> {
        let now = self.now();
        let scope = SecretScope::Project(name.clone());
        let lock = if self.is_postgres() {
            " FOR UPDATE"
        } else {
            ""
        };
        // The project row first: on PostgreSQL a concurrent deletion waits here.
        let select_project = format!("SELECT {PROJECT_COLS} FROM projects WHERE name = $1{lock}");
        let select_live = format!(
            "SELECT id FROM tasks WHERE project = $1 AND status IN ('{}', '{}') ORDER BY id",
            TaskStatus::Queued.as_str(),
            TaskStatus::Running.as_str()
        );
        on_pool!(&self.inner.db, pool => {
            let mut tx = pool.begin_write().await.map_err(db_err)?;
            let row: Option<ProjectRow> = sqlx::query_as(&select_project)
                .bind(name.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
            let project = row.ok_or_else(|| project_not_found(name.as_str()))?.into_project()?;
            let live: Vec<uuid::Uuid> = sqlx::query_scalar(&select_live)
                .bind(name.as_str())
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
            let mut cancelled = Vec::with_capacity(live.len());
            for id in live {
                // A task that finished since the scan is left as it ended.
                match tx.cancel_task(self, TaskId(id), now).await? {
                    Ok(task) => cancelled.push(task.id),
                    Err(StoreError::NotFound { .. } | StoreError::InvalidTransition(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            // The keys belong to this project, not its name: a project created again under
            // the name must get new tasks for them, not this one's.
            sqlx::query(
                "UPDATE tasks SET unique_key = NULL WHERE project = $1 AND unique_key IS NOT NULL",
            )
            .bind(name.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            let callbacks_expired = sqlx::query(
                "UPDATE callback_outbox SET expired_at = $2, last_error = $3 \
                 WHERE delivered_at IS NULL AND expired_at IS NULL \
                 AND task_id IN (SELECT id FROM tasks WHERE project = $1)",
            )
            .bind(name.as_str())
            .bind(Ts::from(now))
            .bind(DELETED_CALLBACK_ERROR)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
            let mut secrets_removed = Vec::new();
            let (mut tokens_revoked, mut tokens_narrowed) = (Vec::new(), Vec::new());
            // A creation undone leaves secrets and tokens alone: they may predate it.
            if removal == Removal::Delete {
            let secrets: Vec<(String, i64)> = sqlx::query_as(
                "SELECT name, COUNT(*) FROM secrets WHERE scope = $1 GROUP BY name ORDER BY name",
            )
            .bind(scope.to_string())
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
            sqlx::query("DELETE FROM secrets WHERE scope = $1")
                .bind(scope.to_string())
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            for (secret, versions) in secrets {
                let secret = SecretName::parse(&secret).map_err(corrupt)?;
                let audit = AuditEntry {
                    at: now,
                    scope: scope.clone(),
                    name: secret.clone(),
                    version: None,
                    action: AuditAction::Delete,
                    actor: actor.to_owned(),
                    detail: Some(format!("project deleted ({versions} versions)")),
                };
                insert_audit!(&mut *tx, &audit)?;
                secrets_removed.push(secret);
            }
            // Tokens limited to the project: none may reach a project created again under
            // its name. One limited to it alone is revoked (its empty list would mean every
            // project); one limited to several loses it. The table is small (named tokens).
            let tokens: Vec<(String, sqlx::types::Json<Vec<String>>)> =
                sqlx::query_as("SELECT name, projects FROM api_tokens ORDER BY name")
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_err)?;
            for (token, sqlx::types::Json(projects)) in tokens {
                if !projects.iter().any(|p| p == name.as_str()) {
                    continue;
                }
                let rest: Vec<String> =
                    projects.into_iter().filter(|p| p != name.as_str()).collect();
                if rest.is_empty() {
                    sqlx::query("DELETE FROM api_tokens WHERE name = $1")
                        .bind(&token)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    tokens_revoked.push(token);
                } else {
                    sqlx::query("UPDATE api_tokens SET projects = $2 WHERE name = $1")
                        .bind(&token)
                        .bind(sqlx::types::Json(rest))
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    tokens_narrowed.push(token);
                }
            }
            }
            sqlx::query("DELETE FROM projects WHERE name = $1")
                .bind(name.as_str())
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
            Ok(ProjectDeletion {
                project,
                cancelled,
                secrets_removed,
                callbacks_expired,
                tokens_revoked,
                tokens_narrowed,
            })
        })
    }
}
