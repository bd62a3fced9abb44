//! Queue conformance, continued: how an idle worker learns of work (a local enqueue, another
//! node's NOTIFY, or the poll when NOTIFY cannot arrive) and retrying a finished task as a
//! new one. Like `queue_conformance`, each body runs on PostgreSQL and SQLite unless it
//! says PostgreSQL only.

use std::time::Duration;

use rdev_core::{ErrorCode, TaskId, TaskStatus, TaskStore, Wake, WorkQueue};
use rdev_store::Backend;

use crate::common::{self, task, TestDb};

const LEASE: Duration = Duration::from_secs(30);

rdev_testkit::both_backends!(
    enqueue_wakes_an_idle_waiter_and_silence_means_poll,
    a_failed_or_cancelled_task_is_retried_once_as_a_new_task,
);

async fn enqueue_wakes_an_idle_waiter_and_silence_means_poll(t: TestDb) {
    let mut signal = t.store.subscribe();
    assert_eq!(
        t.store
            .wait_for_work(&mut signal, Duration::from_millis(50))
            .await,
        Wake::Poll
    );
    // Announced between the empty claim and the wait: remembered, not missed.
    assert!(t.store.claim("w", 1, LEASE).await.unwrap().is_empty());
    t.store.create(task("x")).await.unwrap();
    assert_eq!(
        t.store
            .wait_for_work(&mut signal, Duration::from_secs(30))
            .await,
        Wake::Notified
    );
    assert_eq!(t.store.claim("w", 1, LEASE).await.unwrap().len(), 1);
}

/// PostgreSQL only: waits on a second store (another node) for a task the first store
/// enqueues, then claims it there.
async fn pg_pickup_on_another_node(config: rdev_store::StoreConfig) -> Wake {
    let t = TestDb::fresh(Backend::Postgres).await;
    let worker = t.another_store(config).await;
    let mut signal = worker.subscribe();
    t.store.create(task("x")).await.unwrap();
    let wake = worker
        .wait_for_work(&mut signal, Duration::from_secs(20))
        .await;
    assert_eq!(worker.claim("w", 1, LEASE).await.unwrap().len(), 1);
    wake
}

/// PostgreSQL only: another node's enqueue reaches an idle waiter through NOTIFY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_notify_from_another_node_wakes_an_idle_waiter() {
    let mut slow_poll = common::test_config();
    slow_poll.poll_interval = Duration::from_secs(20);
    let wake = pg_pickup_on_another_node(slow_poll).await;
    assert_eq!(
        wake,
        Wake::Notified,
        "NOTIFY did not arrive within the poll interval"
    );
}

/// PostgreSQL only: without LISTEN (a pooler that drops NOTIFY) the poll still finds work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_pickup_without_notify_falls_back_to_polling() {
    let mut no_listen = common::test_config();
    no_listen.listen = false;
    let wake = pg_pickup_on_another_node(no_listen).await;
    assert_eq!(
        wake,
        Wake::Poll,
        "nothing can announce work to a store without LISTEN"
    );
}

async fn a_failed_or_cancelled_task_is_retried_once_as_a_new_task(t: TestDb) {
    let failed = t.store.create(task("fails")).await.unwrap().task;
    let cancelled = t.store.create(task("cancelled")).await.unwrap().task;
    let queued = t.store.create(task("waits")).await.unwrap().task;
    let l = t.store.claim("w", 1, LEASE).await.unwrap().remove(0);
    assert_eq!(l.task.id, failed.id);
    t.store.fail(&l.key(), "boom", false).await.unwrap();
    t.store.cancel(cancelled.id).await.unwrap();

    let first = t.store.retry(failed.id).await.unwrap();
    assert!(first.created);
    let again = &first.task;
    assert_ne!(again.id, failed.id);
    assert_eq!(
        (again.status, again.attempt, again.retry_of),
        (TaskStatus::Queued, 0, Some(failed.id))
    );
    assert_eq!(
        (&again.project, &again.spec),
        (&failed.project, &failed.spec)
    );
    assert_eq!(
        t.store.get(again.id).await.unwrap().retry_of,
        Some(failed.id)
    );
    // Asked again: the same retry, not a second one.
    let second = t.store.retry(failed.id).await.unwrap();
    assert!(!second.created);
    assert_eq!(second.task.id, again.id);
    assert!(t.store.retry(cancelled.id).await.unwrap().created);

    let err = t.store.retry(queued.id).await.unwrap_err();
    assert_eq!(err.code(), "invalid_transition", "{err}");
    let err = t.store.retry(TaskId::new()).await.unwrap_err();
    assert_eq!(err.code(), "not_found", "{err}");
}
