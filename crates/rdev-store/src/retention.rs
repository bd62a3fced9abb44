//! [`RetentionStore`] on [`SqlStore`]: deletes finished tasks (with their events, attempts
//! and callback rows) and secret audit rows older than a cutoff, each statement bounded to
//! one batch of rows and run in its own short transaction, so pruning a large backlog never
//! holds a lock for long. Which rows may go is the port's rule ([`RetentionStore`]); this
//! module only turns it into SQL. It owns deletion across tables for that one purpose and
//! must not delete anything a running task, a queued task or an undelivered callback needs.
//!
//! Several nodes: every statement is idempotent (it deletes whatever is still there), so
//! concurrent pruners cannot do harm. On PostgreSQL each batch also takes
//! `pg_try_advisory_xact_lock(PRUNE_LOCK)`; a node that finds it taken stops and leaves the
//! round to the node holding it, so nodes do not compete for the same rows.

use std::sync::LazyLock;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rdev_core::{PruneReport, RetentionStore, StoreError, TaskStatus};

use crate::{
    sql::{db_err, on_pool, BeginWrite, Ts},
    sql_store::SqlStore,
};

/// The PostgreSQL advisory lock key only pruners take ("rdevprun" in ASCII).
pub const PRUNE_LOCK: i64 = 0x7264_6576_7072_756e;

/// The statements, built once. `$1` is the cutoff, `$2` the batch size.
struct Sql {
    events: String,
    attempts: String,
    callbacks: String,
    tasks: String,
    audit: String,
}

static SQL: LazyLock<Sql> = LazyLock::new(|| {
    let finished: Vec<String> = TaskStatus::ALL
        .into_iter()
        .filter(|s| s.is_terminal())
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    // A finished task old enough, whose callbacks are all delivered or given up. The
    // status list matches the partial index `tasks_finished` (migration 0004).
    let prunable = format!(
        "tasks.status IN ({}) AND tasks.finished_at < $1 AND NOT EXISTS (\
         SELECT 1 FROM callback_outbox o WHERE o.task_id = tasks.id \
         AND o.delivered_at IS NULL AND o.expired_at IS NULL)",
        finished.join(", ")
    );
    // One batch of prunable tasks; the same rows within one transaction (see `prune_tasks`).
    let batch = format!(
        "SELECT tasks.id FROM tasks WHERE {prunable} ORDER BY tasks.finished_at, tasks.id LIMIT $2"
    );
    Sql {
        // Events first and on their own: one task may have thousands.
        events: format!(
            "DELETE FROM task_events WHERE (task_id, seq) IN (\
             SELECT e.task_id, e.seq FROM task_events e JOIN tasks ON tasks.id = e.task_id \
             WHERE {prunable} LIMIT $2)"
        ),
        attempts: format!("DELETE FROM task_attempts WHERE task_id IN ({batch})"),
        callbacks: format!("DELETE FROM callback_outbox WHERE task_id IN ({batch})"),
        tasks: format!("DELETE FROM tasks WHERE id IN ({batch})"),
        audit: "DELETE FROM secret_audit WHERE id IN (\
                SELECT id FROM secret_audit WHERE at < $1 LIMIT $2)"
            .to_owned(),
    }
});

/// What one batch did.
enum Batch {
    /// Rows deleted per statement, in the order given.
    Deleted(Vec<u64>),
    /// Another node holds the prune lock.
    Busy,
}

impl SqlStore {
    /// Runs `statements` in one write transaction, each bound to `cutoff` and `batch`; on
    /// PostgreSQL only when the prune lock is free.
    async fn prune_batch(
        &self,
        statements: &[&str],
        cutoff: Ts,
        batch: i64,
    ) -> Result<Batch, StoreError> {
        on_pool!(&self.inner.db, pool => {
            let mut tx = pool.begin_write().await.map_err(db_err)?;
            if self.is_postgres() {
                let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                    .bind(PRUNE_LOCK)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db_err)?;
                if !free {
                    tx.rollback().await.map_err(db_err)?;
                    return Ok(Batch::Busy);
                }
            }
            let mut deleted = Vec::with_capacity(statements.len());
            for sql in statements {
                let done = sqlx::query(sql)
                    .bind(cutoff)
                    .bind(batch)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                deleted.push(done.rows_affected());
            }
            tx.commit().await.map_err(db_err)?;
            Ok(Batch::Deleted(deleted))
        })
    }

    /// Repeats one batch until its `full`-th statement deletes fewer than `batch` rows,
    /// adding what each statement deleted to `counts`. `false` when another node was busy.
    async fn prune_until_done(
        &self,
        statements: &[&str],
        full: usize,
        counts: &mut [&mut u64],
        cutoff: Ts,
        batch: i64,
    ) -> Result<bool, StoreError> {
        loop {
            let deleted = match self.prune_batch(statements, cutoff, batch).await? {
                Batch::Busy => return Ok(false),
                Batch::Deleted(d) => d,
            };
            for (count, n) in counts.iter_mut().zip(&deleted) {
                **count += n;
            }
            if deleted[full] < batch.unsigned_abs() {
                return Ok(true);
            }
            // Let other writers in between batches (SQLite has one write lock).
            tokio::task::yield_now().await;
        }
    }
}

#[async_trait]
impl RetentionStore for SqlStore {
    async fn prune_before(
        &self,
        cutoff: DateTime<Utc>,
        batch: u32,
    ) -> Result<PruneReport, StoreError> {
        let (cutoff, batch) = (Ts::from(cutoff), i64::from(batch.max(1)));
        let sql = &*SQL;
        let mut r = PruneReport::default();
        let done = self
            .prune_until_done(&[&sql.events], 0, &mut [&mut r.events], cutoff, batch)
            .await?
            // Children first, then the tasks: the same batch of task ids in one transaction
            // (SQLite holds the write lock; on PostgreSQL the prune lock keeps other
            // pruners out, and a row that became prunable meanwhile is taken next time).
            && self
                .prune_until_done(
                    &[&sql.attempts, &sql.callbacks, &sql.tasks],
                    2,
                    &mut [&mut r.attempts, &mut r.callbacks, &mut r.tasks],
                    cutoff,
                    batch,
                )
                .await?
            && self
                .prune_until_done(&[&sql.audit], 0, &mut [&mut r.audit], cutoff, batch)
                .await?;
        r.skipped = !done;
        Ok(r)
    }
}
