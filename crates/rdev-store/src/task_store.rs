//! The [`TaskStore`] port on [`SqlStore`]: creating tasks (with their idempotency key),
//! reading them, their attempts and events, and queueing a retry. It must not decide
//! retries or lease rules by itself: those follow [`rdev_core::queue`].

use async_trait::async_trait;
use rdev_core::{
    AttemptRecord, Enqueued, NewTask, StoreError, TaskEvent, TaskFilter, TaskId, TaskStatus,
    TaskStore, WorkTask,
};
use sqlx::types::Json;

use crate::{
    notify::NOTIFY_CHANNEL,
    sql::{corrupt, db_err, on_pool, AttemptRow, BeginWrite, EventRow, TaskRow, Ts, TASK_COLS},
    sql_store::{not_found, SqlStore},
};

fn insert_task_sql() -> String {
    format!(
        "INSERT INTO tasks (id, project, spec, status, attempt, max_attempts, priority, run_at, \
         unique_key, request_hash, created_at, updated_at) \
         VALUES ($1, $2, $3, '{}', 0, $4, $5, $6, $7, $9, $8, $8) \
         ON CONFLICT (project, unique_key) WHERE unique_key IS NOT NULL DO NOTHING \
         RETURNING {TASK_COLS}",
        TaskStatus::Queued.as_str()
    )
}

/// A task found by its idempotency key, with the fingerprint of the request it came from.
#[derive(Debug, sqlx::FromRow)]
struct KeyedRow {
    #[sqlx(flatten)]
    task: TaskRow,
    request_hash: Option<String>,
}

#[async_trait]
impl TaskStore for SqlStore {
    async fn create(&self, task: NewTask) -> Result<Enqueued, StoreError> {
        let mut v = self.create_many(vec![task]).await?;
        v.pop()
            .ok_or_else(|| StoreError::Corrupt("insert returned nothing".into()))
    }

    async fn create_many(&self, tasks: Vec<NewTask>) -> Result<Vec<Enqueued>, StoreError> {
        let now = self.now();
        let insert = insert_task_sql();
        let select_existing = format!(
            "SELECT {TASK_COLS}, request_hash FROM tasks WHERE project = $1 AND unique_key = $2"
        );
        let mut out = Vec::with_capacity(tasks.len());
        on_pool!(&self.inner.db, pool => {
            let mut tx = pool.begin_write().await.map_err(db_err)?;
            for t in &tasks {
                let max_attempts = i32::try_from(t.max_attempts.max(1)).unwrap_or(i32::MAX);
                let run_at = Ts::from(t.run_at.unwrap_or(now));
                // Only a keyed task is ever compared, so only a keyed task keeps one.
                let fingerprint = t.unique_key.as_ref().map(|_| t.spec.fingerprint());
                let row: Option<TaskRow> = sqlx::query_as(&insert)
                    .bind(TaskId::new().0)
                    .bind(t.project.as_str())
                    .bind(Json(&t.spec))
                    .bind(max_attempts)
                    .bind(t.priority)
                    .bind(run_at)
                    .bind(t.unique_key.as_deref())
                    .bind(Ts::from(now))
                    .bind(fingerprint.as_deref())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err)?;
                let (row, created, key_reused) = match row {
                    Some(r) => (r, true, false),
                    None => {
                        let r: KeyedRow = sqlx::query_as(&select_existing)
                            .bind(t.project.as_str())
                            .bind(t.unique_key.as_deref())
                            .fetch_one(&mut *tx)
                            .await
                            .map_err(db_err)?;
                        let reused = matches!(
                            (&r.request_hash, &fingerprint),
                            (Some(stored), Some(new)) if stored != new
                        );
                        (r.task, false, reused)
                    }
                };
                out.push(Enqueued { task: row.into_task()?, created, key_reused });
            }
            if self.is_postgres() && out.iter().any(|e| e.created) {
                // One NOTIFY per transaction, however many tasks it inserts.
                sqlx::query("SELECT pg_notify($1, '')")
                    .bind(NOTIFY_CHANNEL)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
            }
            tx.commit().await.map_err(db_err)?;
        });
        if out.iter().any(|e| e.created) {
            self.announce();
        }
        Ok(out)
    }

    async fn get(&self, id: TaskId) -> Result<WorkTask, StoreError> {
        let sql = format!("SELECT {TASK_COLS} FROM tasks WHERE id = $1");
        let row: Option<TaskRow> = on_pool!(&self.inner.db, pool => {
            sqlx::query_as(&sql).bind(id.0).fetch_optional(pool).await.map_err(db_err)?
        });
        row.ok_or_else(|| not_found(id))?.into_task()
    }

    async fn retry(&self, id: TaskId) -> Result<Enqueued, StoreError> {
        let now = Ts::from(self.now());
        // The copy is made only from a failed or cancelled row, and at most once (the
        // unique index on retry_of): a second request inserts nothing and finds the first.
        let insert = format!(
            "INSERT INTO tasks (id, project, spec, status, attempt, max_attempts, priority, \
             run_at, created_at, updated_at, retry_of) \
             SELECT $1, project, spec, '{queued}', 0, max_attempts, priority, $2, $2, $2, id \
             FROM tasks WHERE id = $3 AND status IN ('{failed}', '{cancelled}') \
             ON CONFLICT DO NOTHING RETURNING {TASK_COLS}",
            queued = TaskStatus::Queued.as_str(),
            failed = TaskStatus::Failed.as_str(),
            cancelled = TaskStatus::Cancelled.as_str(),
        );
        let existing = format!("SELECT {TASK_COLS} FROM tasks WHERE retry_of = $1");
        let enqueued = on_pool!(&self.inner.db, pool => {
            let mut tx = pool.begin_write().await.map_err(db_err)?;
            let row: Option<TaskRow> = sqlx::query_as(&insert)
                .bind(TaskId::new().0)
                .bind(now)
                .bind(id.0)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
            let enqueued = match row {
                Some(row) => {
                    if self.is_postgres() {
                        sqlx::query("SELECT pg_notify($1, '')")
                            .bind(NOTIFY_CHANNEL)
                            .execute(&mut *tx)
                            .await
                            .map_err(db_err)?;
                    }
                    Some(Enqueued { task: row.into_task()?, created: true, key_reused: false })
                }
                None => {
                    let row: Option<TaskRow> = sqlx::query_as(&existing)
                        .bind(id.0)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    match row {
                        Some(row) => Some(Enqueued { task: row.into_task()?, created: false, key_reused: false }),
                        None => None,
                    }
                }
            };
            tx.commit().await.map_err(db_err)?;
            enqueued
        });
        match enqueued {
            Some(e) => {
                if e.created {
                    self.announce();
                }
                Ok(e)
            }
            // Nothing to retry: say why (no such task, or one that did not fail).
            None => {
                let task = self.get(id).await?;
                Err(StoreError::InvalidTransition(rdev_core::TransitionError {
                    from: task.status,
                    to: TaskStatus::Queued,
                }))
            }
        }
    }

    async fn list(&self, filter: &TaskFilter) -> Result<Vec<WorkTask>, StoreError> {
        let mut sql = format!("SELECT {TASK_COLS} FROM tasks WHERE 1 = 1");
        let mut n = 0;
        let mut next = || {
            n += 1;
            n
        };
        if filter.project.is_some() {
            sql += &format!(" AND project = ${}", next());
        }
        if let Some(projects) = &filter.projects {
            let placeholders: Vec<String> =
                projects.iter().map(|_| format!("${}", next())).collect();
            if placeholders.is_empty() {
                sql += " AND 1 = 0";
            } else {
                sql += &format!(" AND project IN ({})", placeholders.join(", "));
            }
        }
        if filter.status.is_some() {
            sql += &format!(" AND status = ${}", next());
        }
        if filter.before.is_some() {
            sql += &format!(" AND id < ${}", next());
        }
        sql += &format!(" ORDER BY id DESC LIMIT ${}", next());
        let limit = i64::from(if filter.limit == 0 { 100 } else { filter.limit });
        let rows: Vec<TaskRow> = on_pool!(&self.inner.db, pool => {
            let mut q = sqlx::query_as(&sql);
            if let Some(p) = &filter.project {
                q = q.bind(p.as_str());
            }
            for p in filter.projects.iter().flatten() {
                q = q.bind(p.as_str());
            }
            if let Some(s) = filter.status {
                q = q.bind(s.as_str());
            }
            if let Some(b) = filter.before {
                q = q.bind(b.0);
            }
            q.bind(limit).fetch_all(pool).await.map_err(db_err)?
        });
        rows.into_iter().map(TaskRow::into_task).collect()
    }

    async fn attempts(&self, id: TaskId) -> Result<Vec<AttemptRecord>, StoreError> {
        let sql = "SELECT attempt, worker, started_at, finished_at, outcome, error \
                   FROM task_attempts WHERE task_id = $1 ORDER BY attempt";
        let rows: Vec<AttemptRow> = on_pool!(&self.inner.db, pool => {
            sqlx::query_as(sql).bind(id.0).fetch_all(pool).await.map_err(db_err)?
        });
        Ok(rows.into_iter().map(AttemptRecord::from).collect())
    }

    async fn status_counts(&self) -> Result<Vec<(TaskStatus, u64)>, StoreError> {
        let sql = "SELECT status, COUNT(*) FROM tasks GROUP BY status ORDER BY status";
        let rows: Vec<(String, i64)> = on_pool!(&self.inner.db, pool => {
            sqlx::query_as(sql).fetch_all(pool).await.map_err(db_err)?
        });
        rows.into_iter()
            .map(|(s, n)| {
                let status = s.parse::<TaskStatus>().map_err(corrupt)?;
                Ok((status, u64::try_from(n).unwrap_or(0)))
            })
            .collect()
    }

    async fn append_event(
        &self,
        id: TaskId,
        kind: &str,
        payload: serde_json::Value,
    ) -> Result<i64, StoreError> {
        let now = Ts::from(self.now());
        on_pool!(&self.inner.db, pool => {
            let mut tx = pool.begin_write().await.map_err(db_err)?;
            // The counter on the task row serialises appends per task, so numbers have no
            // gaps and no duplicates even with concurrent writers.
            let seq: Option<i64> = sqlx::query_scalar(
                "UPDATE tasks SET event_seq = event_seq + 1 WHERE id = $1 RETURNING event_seq",
            )
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
            let seq = seq.ok_or_else(|| not_found(id))?;
            sqlx::query(
                "INSERT INTO task_events (task_id, seq, at, kind, payload) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id.0)
            .bind(seq)
            .bind(now)
            .bind(kind)
            .bind(Json(&payload))
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
            Ok(seq)
        })
    }

    async fn events_since(
        &self,
        id: TaskId,
        after: i64,
        limit: u32,
    ) -> Result<Vec<TaskEvent>, StoreError> {
        let sql = "SELECT task_id, seq, at, kind, payload FROM task_events \
                   WHERE task_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";
        let rows: Vec<EventRow> = on_pool!(&self.inner.db, pool => {
            sqlx::query_as(sql)
                .bind(id.0)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
                .map_err(db_err)?
        });
        Ok(rows.into_iter().map(TaskEvent::from).collect())
    }
}
