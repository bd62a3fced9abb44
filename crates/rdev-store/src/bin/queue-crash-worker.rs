//! Test harness, not a product binary: one queue worker process for the crash tests in
//! `tests/it/crash.rs`. It claims tasks in batches, records each execution as a task event
//! (outside the lease check: re-executions after a crash are visible), and completes the
//! task; the completing transaction writes the callback outbox row, which is the effect the
//! test counts. It runs until SIGTERM or SIGKILL and survives a database restart by
//! retrying. It must never be used to run real builds.
//!
//! Usage: `queue-crash-worker DATABASE_URL WORKER_NAME BATCH LEASE_MS WORK_MS`

use std::time::Duration;

use rdev_core::{BuildResult, RetryPolicy, StoreError, TaskStore, WorkQueue};
use rdev_store::{Db, SqlStore, StoreConfig};
use tokio_util::sync::CancellationToken;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, name, batch, lease_ms, work_ms] = args.as_slice() else {
        return Err(
            "usage: queue-crash-worker DATABASE_URL WORKER_NAME BATCH LEASE_MS WORK_MS".into(),
        );
    };
    let batch: u32 = batch.parse()?;
    let lease = Duration::from_millis(lease_ms.parse()?);
    let work = Duration::from_millis(work_ms.parse()?);

    let shutdown = CancellationToken::new();
    let on_term = shutdown.clone();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        term.recv().await;
        on_term.cancel();
    });

    let db = loop {
        match Db::connect(url).await {
            Ok(db) => break db,
            Err(e) if !shutdown.is_cancelled() => {
                eprintln!("{name}: connect: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let config = StoreConfig {
        retry: RetryPolicy {
            base: Duration::from_millis(50),
            cap: Duration::from_secs(1),
            jitter: 0.2,
        },
        poll_interval: Duration::from_millis(250),
        listen: true,
    };
    let store = SqlStore::new(db, config).await?;

    let reaper = {
        let (store, shutdown) = (store.clone(), shutdown.clone());
        tokio::spawn(async move {
            while !shutdown.is_cancelled() {
                if let Err(e) = store.reap_expired().await {
                    eprintln!("reaper: {e}");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        })
    };

    let mut signal = store.subscribe();
    while !shutdown.is_cancelled() {
        let leases = match store.claim(name, batch, lease).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("{name}: claim: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if leases.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = store.wait_for_work(&mut signal, Duration::from_secs(1)) => {}
            }
            continue;
        }
        for lease in leases {
            let id = lease.task.id;
            let executed = serde_json::json!({"worker": name, "attempt": lease.task.attempt});
            if let Err(e) = store.append_event(id, "executed", executed).await {
                eprintln!("{name}: event: {e}");
            }
            tokio::time::sleep(work).await;
            // A failed round trip may still have committed; the retry then finds the lease
            // gone, which is the correct end too.
            for _ in 0..50 {
                match store
                    .complete(
                        &lease.key(),
                        BuildResult {
                            output: format!("completed by {name}"),
                            ..BuildResult::default()
                        },
                    )
                    .await
                {
                    Ok(()) | Err(StoreError::LeaseLost { .. }) => break,
                    Err(e) => {
                        eprintln!("{name}: complete {id}: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
    }
    reaper.await.ok();
    store.shutdown();
    Ok(())
}
