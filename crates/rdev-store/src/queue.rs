//! The [`WorkQueue`] port on [`SqlStore`]: claim (`FOR UPDATE SKIP LOCKED` on PostgreSQL,
//! `BEGIN IMMEDIATE` on SQLite), lease-guarded heartbeat / complete / fail, cancel, the
//! reaper, and the wait for work. Every worker write is guarded by
//! `(id, lease_token, status = 'running', lease_expires_at > now)`; a write that matches no
//! row changes nothing and reports the lease lost. The SQL text is built in
//! [`crate::queue_sql`] from [`TaskStatus::transition`]; this module must not invent
//! transitions of its own.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rdev_core::{
    callback_payload, BuildResult, CompleteReport, FailOutcome, HeartbeatOutcome, Lease, LeaseKey,
    LeaseToken, ReapReport, StoreError, TaskId, TaskStatus, Wake, WorkQueue, WorkSignal, WorkTask,
};
use sqlx::types::Json;
use uuid::Uuid;

use crate::{
    queue_sql::{heartbeat_sql, lock_suffix, HEARTBEAT_CHUNK, SQL},
    sessions::record_session,
    sql::{corrupt, db_err, on_pool, BeginWrite, TaskRow, Ts},
    sql_store::not_found,
    sql_store::SqlStore,
};

use TaskStatus::{Cancelled, Completed, Running};

/// The most expired leases one reaper pass handles; the next pass takes the rest.
const REAP_BATCH: i64 = 500;

pub(crate) fn chrono_dur(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

fn lost(task_id: TaskId) -> StoreError {
    StoreError::LeaseLost { task_id }
}

/// Ends an attempt whose lease `(id, token)` the caller has verified: back to the queue
/// with backoff, or dead with its callback; the attempt row records the first outcome on
/// a retry and the second when the task dies. Expands inside an open transaction `$tx`.
macro_rules! end_attempt {
    ($self:ident, $tx:ident, $id:expr, $token:expr, $attempt:expr, $max:expr, $now:expr,
     $error:expr, $retryable:expr, ($retry_outcome:expr, $dead_outcome:expr)) => {{
        let (id, token, attempt, now): (Uuid, Uuid, i32, DateTime<Utc>) =
            ($id, $token, $attempt, $now);
        if $retryable && attempt < $max {
            let run_at = $self.retry_at(attempt, now);
            let n = sqlx::query(&SQL.retry)
                .bind(id)
                .bind(token)
                .bind(Ts::from(now))
                .bind(Ts::from(run_at))
                .bind($error)
                .execute(&mut *$tx)
                .await
                .map_err(db_err)?
                .rows_affected();
            sqlx::query(&SQL.finish_attempt)
                .bind(id)
                .bind(attempt)
                .bind(Ts::from(now))
                .bind($retry_outcome)
                .bind($error)
                .execute(&mut *$tx)
                .await
                .map_err(db_err)?;
            (n, FailOutcome::Retrying { run_at })
        } else {
            let row: Option<TaskRow> = sqlx::query_as(&SQL.dead)
                .bind(id)
                .bind(token)
                .bind(Ts::from(now))
                .bind($error)
                .fetch_optional(&mut *$tx)
                .await
                .map_err(db_err)?;
            sqlx::query(&SQL.finish_attempt)
                .bind(id)
                .bind(attempt)
                .bind(Ts::from(now))
                .bind($dead_outcome)
                .bind($error)
                .execute(&mut *$tx)
                .await
                .map_err(db_err)?;
            let n = match row {
                Some(row) => {
                    let task = row.into_task()?;
                    write_callback!($tx, &task, now);
                    1
                }
                None => 0,
            };
            (n, FailOutcome::Dead)
        }
    }};
}

/// Inserts the callback outbox row of a finished task, when its spec has a callback URL.
macro_rules! write_callback {
    ($tx:ident, $task:expr, $now:expr) => {{
        let task: &WorkTask = $task;
        if let Some(url) = &task.spec.callback_url {
            sqlx::query(&SQL.insert_outbox)
                .bind(task.id.0)
                .bind(url.as_str())
                .bind(Json(callback_payload(task)))
                .bind(Ts::from($now))
                .execute(&mut *$tx)
                .await
                .map_err(db_err)?;
        }
    }};
}

/// Cancelling one task inside an open write transaction, on either backend. The one way a
/// task is cancelled: [`WorkQueue::cancel`] and a project's deletion both use it.
pub(crate) trait CancelInTx {
    /// Cancels the queued or running task `id`: status `cancelled` with the lease cleared
    /// (its worker, on whatever node, finds the lease lost at its next heartbeat), a running
    /// attempt recorded as cancelled, and the callback row written. The outer error is the
    /// database's; the inner one says why this task cannot be cancelled (`NotFound`, or an
    /// invalid transition from a finished status), leaving the transaction usable.
    async fn cancel_task(
        &mut self,
        store: &SqlStore,
        id: TaskId,
        now: DateTime<Utc>,
    ) -> Result<Result<WorkTask, StoreError>, StoreError>;
}

macro_rules! impl_cancel_in_tx {
    ($($db:ty),*) => {$(
        impl CancelInTx for sqlx::Transaction<'static, $db> {
            async fn cancel_task(
                &mut self,
                store: &SqlStore,
                id: TaskId,
                now: DateTime<Utc>,
            ) -> Result<Result<WorkTask, StoreError>, StoreError> {
                let tx: &mut <$db as sqlx::Database>::Connection = &mut **self;
                let lookup = format!("{}{}", SQL.cancel_lookup, lock_suffix(store, false));
                let row: Option<(String, i32)> = sqlx::query_as(&lookup)
                    .bind(id.0)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err)?;
                let Some((status, attempt)) = row else {
                    return Ok(Err(not_found(id)));
                };
                let from: TaskStatus = status.parse().map_err(corrupt)?;
                if let Err(e) = from.transition(Cancelled) {
                    return Ok(Err(e.into()));
                }
                let row: TaskRow = sqlx::query_as(&SQL.cancel)
                    .bind(id.0)
                    .bind(Ts::from(now))
                    .bind(from.as_str())
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db_err)?;
                let task = row.into_task()?;
                if from == Running {
                    sqlx::query(&SQL.finish_attempt)
                        .bind(id.0)
                        .bind(attempt)
                        .bind(Ts::from(now))
                        .bind(Cancelled.as_str())
                        .bind(None::<String>)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                }
                write_callback!(tx, &task, now);
                Ok(Ok(task))
            }
        }
    )*};
}

impl_cancel_in_tx!(sqlx::Postgres, sqlx::Sqlite);

impl SqlStore {
    /// [`WorkQueue::fail`]; a `result` (never retried) is stored by the lease check itself.
    async fn fail_attempt(
        &self,
        lease: &LeaseKey,
        error: &str,
        retryable: bool,
        result: Option<&BuildResult>,
    ) -> Result<FailOutcome, StoreError> {
        let now = self.now();
        let lookup = format!("{}{}", SQL.fail_lookup, lock_suffix(self, false));
        on_pool!(&self.inner.db, pool => {
            let mut tx = pool.begin_write().await.map_err(db_err)?;
            let sql = if result.is_some() { &SQL.record_result } else { &lookup };
            let mut q = sqlx::query_as(sql)
                .bind(lease.task_id.0)
                .bind(lease.token.0)
                .bind(Ts::from(now));
            if let Some(result) = result {
                q = q.bind(Json(result));
            }
            let held: Option<(i32, i32)> = q.fetch_optional(&mut *tx).await.map_err(db_err)?;
            let (attempt, max) = held.ok_or_else(|| lost(lease.task_id))?;
            let (n, outcome) = end_attempt!(self, tx, lease.task_id.0, lease.token.0, attempt,
                max, now, error, retryable, ("retry", "failed"));
            if n != 1 {
                return Err(lost(lease.task_id));
            }
            tx.commit().await.map_err(db_err)?;
            if matches!(outcome, FailOutcome::Dead) {
                self.announce_outbox();
            }
            Ok(outcome)
        })
    }

    fn retry_at(&self, attempt: i32, now: DateTime<Utc>) -> DateTime<Utc> {
        let unit: f64 = rand::random();
        let delay = self
            .inner
            .config
            .retry
            .delay(u32::try_from(attempt).unwrap_or(1), unit);
        now + chrono_dur(delay)
    }
}

#[async_trait]
impl WorkQueue for SqlStore {
    async fn claim(
        &self,
        worker: &str,
        max: u32,
        lease_for: Duration,
    ) -> Result<Vec<Lease>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let now = self.now();
        let expires = now + chrono_dur(lease_for);
        // One token per claim: the guard is (id, token), so it is still unique per lease.
        let token = Uuid::new_v4();
        let claim = if self.is_postgres() {
            &SQL.claim_pg
        } else {
            &SQL.claim_sqlite
        };
        let rows: Vec<TaskRow> = on_pool!(&self.inner.db, pool => {
            let mut tx = pool.begin_write().await.map_err(db_err)?;
            if self.is_postgres() {
                // A claim lost in a server crash is harmless: the task is still queued, and
                // the worker's lease guard fails at its first heartbeat or completion. So
                // the claim skips the WAL flush; completions keep it (their effect counts).
                sqlx::query("SET LOCAL synchronous_commit = off")
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
            }
            let rows: Vec<TaskRow> = sqlx::query_as(claim)
                .bind(token)
                .bind(worker)
                .bind(Ts::from(expires))
                .bind(Ts::from(now))
                .bind(i64::from(max))
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
            if !rows.is_empty() {
                sqlx::query(&SQL.record_attempts)
                    .bind(token)
                    .bind(worker)
                    .bind(Ts::from(now))
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
            }
            tx.commit().await.map_err(db_err)?;
            rows
        });
        let mut leases = rows
            .into_iter()
            .map(|r| {
                Ok(Lease {
                    task: r.into_task()?,
                    token: LeaseToken(token),
                    expires_at: expires,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        leases.sort_by_key(|l| l.task.id);
        Ok(leases)
    }

    async fn heartbeat(
        &self,
        leases: &[LeaseKey],
        lease_for: Duration,
    ) -> Result<HeartbeatOutcome, StoreError> {
        let now = self.now();
        let until = now + chrono_dur(lease_for);
        let mut lost_keys = Vec::new();
        // One statement per chunk of leases (the row-value IN works on both backends), so
        // a worker holding k leases pays one round trip, not k.
        for chunk in leases.chunks(HEARTBEAT_CHUNK) {
            let sql = heartbeat_sql(chunk.len());
            let kept: Vec<(Uuid, Uuid)> = on_pool!(&self.inner.db, pool => {
                let mut q = sqlx::query_as(&sql)
                    .bind(Ts::from(now))
                    .bind(Ts::from(until));
                for l in chunk {
                    q = q.bind(l.task_id.0).bind(l.token.0);
                }
                q.fetch_all(pool).await.map_err(db_err)?
            });
            lost_keys.extend(
                chunk
                    .iter()
                    .filter(|l| !kept.contains(&(l.task_id.0, l.token.0)))
                    .copied(),
            );
        }
        Ok(HeartbeatOutcome {
            extended_until: until,
            lost: lost_keys,
        })
    }

    async fn complete(&self, lease: &LeaseKey, result: BuildResult) -> Result<(), StoreError> {
        let report = self.complete_many(&[(*lease, result)]).await?;
        if report.completed.is_empty() {
            return Err(lost(lease.task_id));
        }
        Ok(())
    }

    async fn complete_many(
        &self,
        items: &[(LeaseKey, BuildResult)],
    ) -> Result<CompleteReport, StoreError> {
        let now = self.now();
        let mut report = CompleteReport::default();
        on_pool!(&self.inner.db, pool => {
            let mut tx = pool.begin_write().await.map_err(db_err)?;
            for (key, result) in items {
                let row: Option<TaskRow> = sqlx::query_as(&SQL.complete)
                    .bind(key.task_id.0)
                    .bind(key.token.0)
                    .bind(Ts::from(now))
                    .bind(Json(result))
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err)?;
                let Some(row) = row else {
                    report.lost.push(key.task_id);
                    continue;
                };
                let task = row.into_task()?;
                sqlx::query(&SQL.finish_attempt)
                    .bind(task.id.0)
                    .bind(i32::try_from(task.attempt).unwrap_or(i32::MAX))
                    .bind(Ts::from(now))
                    .bind(Completed.as_str())
                    .bind(None::<String>)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                write_callback!(tx, &task, now);
                record_session!(tx, &task, result, now);
                report.completed.push(task.id);
            }
            tx.commit().await.map_err(db_err)?;
        });
        if !report.completed.is_empty() {
            self.announce_outbox();
        }
        Ok(report)
    }

    async fn fail(
        &self,
        lease: &LeaseKey,
        error: &str,
        retryable: bool,
    ) -> Result<FailOutcome, StoreError> {
        self.fail_attempt(lease, error, retryable, None).await
    }

    async fn fail_with_result(
        &self,
        lease: &LeaseKey,
        error: &str,
        result: BuildResult,
    ) -> Result<(), StoreError> {
        self.fail_attempt(lease, error, false, Some(&result))
            .await?;
        Ok(())
    }

    async fn cancel(&self, id: TaskId) -> Result<WorkTask, StoreError> {
        let now = self.now();
        on_pool!(&self.inner.db, pool => {
            let mut tx = pool.begin_write().await.map_err(db_err)?;
            let task = tx.cancel_task(self, id, now).await??;
            tx.commit().await.map_err(db_err)?;
            self.announce_outbox();
            Ok(task)
        })
    }

    async fn reap_expired(&self) -> Result<ReapReport, StoreError> {
        let now = self.now();
        let scan = format!("{}{}", SQL.reap_scan, lock_suffix(self, true));
        let mut report = ReapReport::default();
        on_pool!(&self.inner.db, pool => {
            let mut tx = pool.begin_write().await.map_err(db_err)?;
            let expired: Vec<(Uuid, Uuid, i32, i32)> = sqlx::query_as(&scan)
                .bind(Ts::from(now))
                .bind(REAP_BATCH)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
            for (id, token, attempt, max) in expired {
                let error = format!("lease expired during attempt {attempt}");
                let (n, outcome) = end_attempt!(self, tx, id, token, attempt, max, now,
                    error.as_str(), true, ("lease_expired", "lease_expired"));
                if n == 1 {
                    match outcome {
                        FailOutcome::Retrying { .. } => report.requeued.push(TaskId(id)),
                        FailOutcome::Dead => report.dead.push(TaskId(id)),
                    }
                }
            }
            tx.commit().await.map_err(db_err)?;
        });
        if !report.requeued.is_empty() {
            self.announce();
        }
        if !report.dead.is_empty() {
            self.announce_outbox();
        }
        Ok(report)
    }

    fn subscribe(&self) -> WorkSignal {
        WorkSignal(self.inner.signal.subscribe())
    }

    async fn wait_for_work(&self, signal: &mut WorkSignal, max: Duration) -> Wake {
        let wait = max.min(self.inner.config.poll_interval);
        tokio::select! {
            changed = signal.0.changed() => {
                if changed.is_ok() {
                    return Wake::Notified;
                }
                tokio::time::sleep(wait).await;
                Wake::Poll
            }
            _ = tokio::time::sleep(wait) => Wake::Poll,
        }
    }
}
