//! The [`UsageStore`] port on [`SqlStore`]: model usage per task, attempt and model, as
//! the gateway meters it. Each recorded call adds to its row in one upsert, so concurrent
//! calls of one attempt never lose a count. It stores numbers only; pricing and budgets
//! are the gateway's.

use async_trait::async_trait;
use rdev_core::{AttemptUsage, MeteredUsage, StoreError, TaskId, UsageStore};

use crate::{
    sql::{db_err, on_pool},
    sql_store::SqlStore,
};

/// A `task_usage` row.
#[derive(Debug, sqlx::FromRow)]
struct UsageRow {
    attempt: i32,
    model: String,
    provider: String,
    input_tokens: i64,
    output_tokens: i64,
    cache_read_input_tokens: i64,
    cache_creation_input_tokens: i64,
    cache_creation_1h_input_tokens: i64,
    cost_usd: f64,
    calls: i64,
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn uncount(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl From<UsageRow> for AttemptUsage {
    fn from(r: UsageRow) -> Self {
        Self {
            attempt: u32::try_from(r.attempt).unwrap_or(0),
            provider: r.provider,
            model: r.model,
            usage: MeteredUsage {
                input_tokens: uncount(r.input_tokens),
                output_tokens: uncount(r.output_tokens),
                cache_read_input_tokens: uncount(r.cache_read_input_tokens),
                cache_creation_input_tokens: uncount(r.cache_creation_input_tokens),
                cache_creation_1h_input_tokens: uncount(r.cache_creation_1h_input_tokens),
            },
            cost_usd: r.cost_usd,
            calls: uncount(r.calls),
        }
    }
}

const UPSERT: &str = "INSERT INTO task_usage (task_id, attempt, model, provider, input_tokens, \
     output_tokens, cache_read_input_tokens, cache_creation_input_tokens, \
     cache_creation_1h_input_tokens, cost_usd, calls) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
     ON CONFLICT (task_id, attempt, model) DO UPDATE SET \
     input_tokens = task_usage.input_tokens + excluded.input_tokens, \
     output_tokens = task_usage.output_tokens + excluded.output_tokens, \
     cache_read_input_tokens = task_usage.cache_read_input_tokens + excluded.cache_read_input_tokens, \
     cache_creation_input_tokens = task_usage.cache_creation_input_tokens + excluded.cache_creation_input_tokens, \
     cache_creation_1h_input_tokens = task_usage.cache_creation_1h_input_tokens + excluded.cache_creation_1h_input_tokens, \
     cost_usd = task_usage.cost_usd + excluded.cost_usd, \
     calls = task_usage.calls + excluded.calls";

#[async_trait]
impl UsageStore for SqlStore {
    async fn record_usage(
        &self,
        task: TaskId,
        attempt: u32,
        u: &AttemptUsage,
    ) -> Result<(), StoreError> {
        let attempt = i32::try_from(attempt).unwrap_or(i32::MAX);
        on_pool!(&self.inner.db, pool => {
            sqlx::query(UPSERT)
                .bind(task.0)
                .bind(attempt)
                .bind(&u.model)
                .bind(&u.provider)
                .bind(count(u.usage.input_tokens))
                .bind(count(u.usage.output_tokens))
                .bind(count(u.usage.cache_read_input_tokens))
                .bind(count(u.usage.cache_creation_input_tokens))
                .bind(count(u.usage.cache_creation_1h_input_tokens))
                .bind(u.cost_usd)
                .bind(count(u.calls))
                .execute(pool)
                .await
                .map_err(db_err)?;
        });
        Ok(())
    }

    async fn task_usage(&self, task: TaskId) -> Result<Vec<AttemptUsage>, StoreError> {
        let sql = "SELECT attempt, model, provider, input_tokens, output_tokens, \
                   cache_read_input_tokens, cache_creation_input_tokens, \
                   cache_creation_1h_input_tokens, cost_usd, calls \
                   FROM task_usage WHERE task_id = $1 ORDER BY attempt, model";
        let rows: Vec<UsageRow> = on_pool!(&self.inner.db, pool => {
            sqlx::query_as(sql).bind(task.0).fetch_all(pool).await.map_err(db_err)?
        });
        Ok(rows.into_iter().map(AttemptUsage::from).collect())
    }
}
