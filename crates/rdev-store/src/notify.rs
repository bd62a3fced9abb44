//! The PostgreSQL LISTEN side of work pickup: one connection per store LISTENs on
//! [`NOTIFY_CHANNEL`](NOTIFY_CHANNEL) and bumps the store's wake-up signal.
//! After a lost connection it bumps the signal too, since announcements made meanwhile are
//! gone; idle workers then look for work at once. It must not claim or decide anything.

use std::{sync::Arc, time::Duration};

use sqlx::{postgres::PgListener, PgPool};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::db::DbError;

/// The channel task announcements are sent on (`NOTIFY rdev_queue`).
pub const NOTIFY_CHANNEL: &str = "rdev_queue";

/// LISTENs before returning, then forwards announcements until `shutdown`.
pub(crate) async fn start_listener(
    pool: &PgPool,
    signal: Arc<watch::Sender<u64>>,
    shutdown: CancellationToken,
) -> Result<(), DbError> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(NOTIFY_CHANNEL).await?;
    let bump = move || signal.send_modify(|g| *g = g.wrapping_add(1));
    tokio::spawn(async move {
        loop {
            let got = tokio::select! {
                _ = shutdown.cancelled() => break,
                got = listener.try_recv() => got,
            };
            match got {
                Ok(Some(_)) => bump(),
                Ok(None) => {
                    tracing::warn!("queue LISTEN connection lost; reconnecting");
                    bump();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "queue LISTEN failed; retrying in 1 s");
                    bump();
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    });
    Ok(())
}
