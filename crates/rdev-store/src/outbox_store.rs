//! The [`OutboxStore`] port on [`SqlStore`]: the bookkeeping of callback deliveries. The
//! outbox rows themselves are written by the queue in the transaction that finishes a
//! task; this module only claims, reads and marks them. It must not send HTTP or sign
//! anything.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rdev_core::{OutboxRow, OutboxStore, StoreError, TaskId, WorkSignal};

use crate::{
    sql::{db_err, on_pool, BeginWrite, OutboxDbRow, Ts, OUTBOX_COLS},
    sql_store::SqlStore,
};

fn outbox_not_found(id: i64) -> StoreError {
    StoreError::NotFound {
        what: "outbox row",
        id: id.to_string(),
    }
}

#[async_trait]
impl OutboxStore for SqlStore {
    fn subscribe_outbox(&self) -> WorkSignal {
        WorkSignal(self.inner.outbox.subscribe())
    }

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
