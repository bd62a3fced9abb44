//! [`DatabaseClock`]: on PostgreSQL, queue time (claim eligibility, lease expiry, backoff)
//! is the database server's clock, not each node's. Several nodes share one queue; with
//! their own clocks, a node running a few seconds fast would reap a lease another node
//! still holds. Reading `clock_timestamp()` on every queue statement would cost a round
//! trip each, so the clock measures its offset from the local clock (`SELECT
//! clock_timestamp()`, halfway through the round trip) when the store opens, keeps it
//! fresh in the background, and adds it to the local clock. The error is at most half a
//! round trip plus local drift between refreshes: milliseconds against leases of seconds.
//! SQLite is one node's file and keeps the system clock.

use std::{
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use rdev_core::{queue::truncate_millis, Clock};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::db::DbError;

/// How often the offset is measured again.
const REFRESH: Duration = Duration::from_secs(60);

/// The local clock corrected by the measured offset to the database server's clock.
#[derive(Debug, Clone, Default)]
pub struct DatabaseClock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock for DatabaseClock {
    fn now(&self) -> DateTime<Utc> {
        let offset = chrono::Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed));
        truncate_millis(Utc::now() + offset)
    }
}

impl DatabaseClock {
    /// Measures the offset on `pool` once, then again every minute until `stop` fires (a
    /// failed refresh keeps the last offset).
    pub async fn start(pool: &PgPool, stop: CancellationToken) -> Result<Self, DbError> {
        let clock = Self::default();
        clock.measure(pool).await?;
        let (this, pool) = (clock.clone(), pool.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(REFRESH) => {}
                }
                if let Err(e) = this.measure(&pool).await {
                    tracing::warn!(error = %e, "could not read the database clock; keeping the last offset");
                }
            }
        });
        Ok(clock)
    }

    /// The database clock minus the local one, in milliseconds, right now.
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }

    async fn measure(&self, pool: &PgPool) -> Result<(), DbError> {
        let before = Utc::now();
        let db: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
            .fetch_one(pool)
            .await?;
        let after = Utc::now();
        self.offset_ms
            .store(offset_ms(before, db, after), Ordering::Relaxed);
        Ok(())
    }
}

/// The offset of `db`, read between the local instants `before` and `after`, taken to be
/// read halfway through the round trip.
fn offset_ms(before: DateTime<Utc>, db: DateTime<Utc>, after: DateTime<Utc>) -> i64 {
    let midpoint = before + (after - before) / 2;
    (db - midpoint).num_milliseconds()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_is_measured_from_the_middle_of_the_round_trip() {
        let t = |ms: i64| DateTime::from_timestamp_millis(1_700_000_000_000 + ms).unwrap();
        // The database runs 5 s ahead; its reading came back after a 40 ms round trip.
        assert_eq!(offset_ms(t(0), t(5_020), t(40)), 5_000);
        assert_eq!(offset_ms(t(0), t(-3_000 + 10), t(20)), -3_000);
        let clock = DatabaseClock::default();
        clock.offset_ms.store(5_000, Ordering::Relaxed);
        let drift = (clock.now() - Utc::now()).num_milliseconds();
        assert!((4_990..=5_010).contains(&drift), "{drift}");
    }

    /// On a real PostgreSQL the clock agrees with the server's `clock_timestamp()`.
    #[tokio::test]
    async fn reads_the_postgres_servers_clock() {
        let pg = rdev_testkit::pg::PgDatabase::create().await;
        let pool = PgPool::connect(&pg.url).await.unwrap();
        let stop = CancellationToken::new();
        let clock = DatabaseClock::start(&pool, stop.clone()).await.unwrap();
        let server: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
            .fetch_one(&pool)
            .await
            .unwrap();
        let gap = (clock.now() - server).num_milliseconds().abs();
        assert!(gap < 500, "database clock off by {gap} ms");
        stop.cancel();
        pool.close().await;
    }
}
