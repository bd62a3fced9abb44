//! Retention conformance: pruning old history deletes finished tasks with their events,
//! attempts and callback rows, and old audit rows, in batches; it keeps queued and running
//! tasks, tasks whose callback is still being delivered, and everything recent. One body
//! per behaviour, run on PostgreSQL and SQLite.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rdev_core::{
    AuditAction, AuditEntry, Clock, ErrorCode, OutboxStore, PruneReport, RetentionStore,
    SecretName, SecretRepository, SecretScope, TaskId, TaskStatus, TaskStore, WorkQueue,
};
use rdev_store::{Db, SqlSecretRepository, SqlStore};

use crate::common::{self, task, task_with_callback, TestDb};

rdev_testkit::both_backends!(
    old_finished_history_is_pruned_in_batches_and_live_work_is_kept,
    concurrent_pruners_delete_every_row_once,
);

const LEASE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Claims the one queued task and returns its lease key.
async fn claim_one(store: &SqlStore) -> rdev_core::LeaseKey {
    let leases = store.claim("w", 1, LEASE).await.unwrap();
    assert_eq!(leases.len(), 1);
    leases[0].key()
}

/// A task run to completion with `events` events; its callback row (when asked for) is
/// left undelivered.
async fn completed(t: &TestDb, callback: bool, events: usize) -> TaskId {
    let new = if callback {
        task_with_callback("done")
    } else {
        task("done")
    };
    let id = t.store.create(new).await.unwrap().task.id;
    for i in 0..events {
        let payload = serde_json::json!({ "i": i });
        t.store.append_event(id, "message", payload).await.unwrap();
    }
    let key = claim_one(&t.store).await;
    assert_eq!(key.task_id, id);
    t.store.complete(&key, common::result("ok")).await.unwrap();
    id
}

/// The outbox row of `id`.
async fn callback_of(t: &TestDb, id: TaskId) -> i64 {
    t.store.outbox_for_task(id).await.unwrap()[0].id
}

async fn audit_at(repo: &SqlSecretRepository, at: DateTime<Utc>) {
    let entry = AuditEntry {
        at,
        scope: SecretScope::Global,
        name: SecretName::parse("GIT_TOKEN").unwrap(),
        version: Some(1),
        action: AuditAction::Read,
        actor: "task:x".into(),
        detail: None,
    };
    repo.record_audit(&entry).await.unwrap();
}

async fn exists(t: &TestDb, id: TaskId) -> bool {
    match t.store.get(id).await {
        Ok(_) => true,
        Err(e) if e.code() == "not_found" => false,
        Err(e) => panic!("{e}"),
    }
}

async fn old_finished_history_is_pruned_in_batches_and_live_work_is_kept(t: TestDb) {
    common::parallel_site(&t.store).await;
    let repo = SqlSecretRepository::new(t.db.clone());
    // Forty days ago: finished tasks of every kind, and work that is still live.
    let delivered = completed(&t, true, 5).await;
    let expired = completed(&t, true, 1).await;
    let pending = completed(&t, true, 2).await;
    let quiet = completed(&t, false, 0).await;
    let delivered_row = callback_of(&t, delivered).await;
    let expired_row = callback_of(&t, expired).await;
    let pending_row = callback_of(&t, pending).await;
    let due = t
        .store
        .claim_due(10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(due.len(), 3);
    t.store.mark_delivered(delivered_row).await.unwrap();
    t.store
        .mark_failed(expired_row, "HTTP 410", None)
        .await
        .unwrap();
    // Still retrying: due again later.
    let retry_at = t.clock.now() + chrono::Duration::days(400);
    t.store
        .mark_failed(pending_row, "HTTP 503", Some(retry_at))
        .await
        .unwrap();

    let mut one_try = task("fails");
    one_try.max_attempts = 1;
    let dead = t.store.create(one_try).await.unwrap().task.id;
    let key = claim_one(&t.store).await;
    t.store.fail(&key, "agent failed", false).await.unwrap();
    let cancelled = t.store.create(task("cancelled")).await.unwrap().task.id;
    t.store.cancel(cancelled).await.unwrap();
    let running = t.store.create(task("running")).await.unwrap().task.id;
    claim_one(&t.store).await;
    t.store
        .append_event(running, "message", serde_json::json!({}))
        .await
        .unwrap();
    let mut later = task("queued for later");
    later.run_at = Some(t.clock.now() + chrono::Duration::days(365));
    let queued = t.store.create(later).await.unwrap().task.id;
    for _ in 0..3 {
        audit_at(&repo, t.clock.now()).await;
    }

    // Today: a recent finished task and a recent audit row.
    t.clock.advance(Duration::from_secs(40 * 24 * 3600));
    let recent = completed(&t, false, 3).await;
    audit_at(&repo, t.clock.now()).await;

    let cutoff = t.clock.now() - chrono::Duration::days(30);
    // A batch of 2 rows per statement: five events of one task take three batches.
    let report = t.store.prune_before(cutoff, 2).await.unwrap();
    assert_eq!(
        report,
        PruneReport {
            tasks: 5,
            events: 5 + 1,
            attempts: 4,
            callbacks: 2,
            audit: 3,
            skipped: false,
        }
    );
    for gone in [delivered, expired, quiet, dead, cancelled] {
        assert!(!exists(&t, gone).await, "{gone} was pruned");
        assert!(t.store.events_since(gone, 0, 100).await.unwrap().is_empty());
        assert!(t.store.attempts(gone).await.unwrap().is_empty());
        assert!(t.store.outbox_for_task(gone).await.unwrap().is_empty());
    }
    // A callback still retrying keeps its task and everything of it.
    assert_eq!(
        t.store.get(pending).await.unwrap().status,
        TaskStatus::Completed
    );
    assert_eq!(
        t.store.events_since(pending, 0, 100).await.unwrap().len(),
        2
    );
    assert_eq!(t.store.outbox_for_task(pending).await.unwrap().len(), 1);
    assert_eq!(t.store.attempts(pending).await.unwrap().len(), 1);
    // Live work is never pruned, however old.
    assert_eq!(
        t.store.get(running).await.unwrap().status,
        TaskStatus::Running
    );
    assert_eq!(
        t.store.events_since(running, 0, 100).await.unwrap().len(),
        1
    );
    assert_eq!(
        t.store.get(queued).await.unwrap().status,
        TaskStatus::Queued
    );
    // Recent history stays.
    assert_eq!(t.store.events_since(recent, 0, 100).await.unwrap().len(), 3);
    let audit = repo
        .audit_log(&rdev_core::AuditFilter::default())
        .await
        .unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");

    // Nothing more to do: pruning again deletes nothing.
    let again = t.store.prune_before(cutoff, 2).await.unwrap();
    assert_eq!(again.total(), 0, "{again:?}");

    // Once the last callback is given up, its task goes too.
    t.store
        .mark_failed(pending_row, "HTTP 503", None)
        .await
        .unwrap();
    let last = t.store.prune_before(cutoff, 1000).await.unwrap();
    assert_eq!((last.tasks, last.events, last.callbacks), (1, 2, 1));
    assert!(!exists(&t, pending).await);
}

async fn concurrent_pruners_delete_every_row_once(t: TestDb) {
    let n = 12;
    for _ in 0..n {
        completed(&t, false, 3).await;
    }
    t.clock.advance(Duration::from_secs(40 * 24 * 3600));
    let cutoff = t.clock.now() - chrono::Duration::days(30);
    if let Db::Postgres(pool) = &t.db {
        // While another node holds the prune lock, this one leaves the round to it.
        let mut busy = pool.begin().await.unwrap();
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(rdev_store::retention::PRUNE_LOCK)
            .execute(&mut *busy)
            .await
            .unwrap();
        let skipped = t.store.prune_before(cutoff, 2).await.unwrap();
        assert_eq!(
            skipped,
            PruneReport {
                skipped: true,
                ..Default::default()
            }
        );
        busy.rollback().await.unwrap();
    }
    let other = t.another_store(common::test_config()).await;
    let (a, b) = tokio::join!(
        t.store.prune_before(cutoff, 2),
        other.prune_before(cutoff, 2)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    // A node that found another pruning may have stopped early; a later round finishes.
    let rest = t.store.prune_before(cutoff, 2).await.unwrap();
    assert!(!rest.skipped);
    let reports = [a, b, rest];
    let tasks: u64 = reports.iter().map(|r| r.tasks).sum();
    let events: u64 = reports.iter().map(|r| r.events).sum();
    assert_eq!((tasks, events), (n, 3 * n), "{reports:?}");
    assert_eq!(t.store.status_counts().await.unwrap(), []);
}
