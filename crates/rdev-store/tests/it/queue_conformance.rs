//! Queue conformance: every behaviour of SPEC 4 as one test body, run unchanged on
//! PostgreSQL and SQLite (a fresh database each). Time moves through a manual clock, so
//! lease expiry and backoff are tested without sleeping.

use std::{collections::HashSet, time::Duration};

use crate::common::{self, task, task_with_callback, TestDb};
use rdev_core::{
    callback_payload, BuildResult, ErrorCode, FailOutcome, LeaseKey, LeaseToken, OutboxStore,
    StoreError, TaskId, TaskStatus, TaskStore, WorkQueue,
};

const LEASE: Duration = Duration::from_secs(30);

rdev_testkit::both_backends!(
    two_workers_never_hold_the_same_task,
    stale_worker_cannot_complete_after_its_lease_expired,
    failed_attempts_retry_with_exponential_backoff,
    task_is_dead_after_max_attempts,
    non_retryable_failure_is_dead_at_once,
    duplicate_unique_key_returns_the_existing_task,
    cancel_of_a_queued_task_removes_it_from_the_queue,
    cancel_of_a_running_task_revokes_its_lease,
    claim_follows_priority_then_run_at_and_skips_delayed_tasks,
    heartbeat_extends_held_leases_and_reports_lost_ones,
    heartbeat_of_held_and_lost_leases_together_reports_only_the_lost,
    same_worker_claiming_a_task_again_keeps_the_new_lease_apart_from_the_old,
    reaper_requeues_expired_leases_and_kills_exhausted_tasks,
    completion_writes_result_and_callback_row_together,
    a_failure_after_the_push_keeps_its_result_in_the_task_and_callback,
    batched_completion_reports_lost_leases,
);

async fn two_workers_never_hold_the_same_task(t: TestDb) {
    let n = 300;
    let tasks = (0..n).map(|i| task(&format!("job {i}"))).collect();
    t.store.create_many(tasks).await.unwrap();
    let other = t.another_store(common::test_config()).await;
    let mut handles = Vec::new();
    for w in 0..4 {
        let store = if w % 2 == 0 {
            t.store.clone()
        } else {
            other.clone()
        };
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let leases = store.claim(&format!("w{w}"), 7, LEASE).await.unwrap();
                if leases.is_empty() {
                    break;
                }
                for l in &leases {
                    mine.push(l.task.id);
                    store
                        .complete(&l.key(), BuildResult::default())
                        .await
                        .unwrap();
                }
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let unique: HashSet<TaskId> = all.iter().copied().collect();
    assert_eq!(all.len(), n, "every task claimed exactly once in total");
    assert_eq!(unique.len(), n, "no task was held by two workers");
    for id in unique.iter().take(20) {
        let task = t.store.get(*id).await.unwrap();
        assert_eq!(task.status, TaskStatus::Completed);
        assert_eq!(task.attempt, 1);
    }
}

async fn stale_worker_cannot_complete_after_its_lease_expired(t: TestDb) {
    let id = t
        .store
        .create(task_with_callback("x"))
        .await
        .unwrap()
        .task
        .id;
    let a = t.store.claim("a", 1, LEASE).await.unwrap().remove(0);

    // Expired but not yet reaped: the guard already refuses the stale worker.
    t.clock.advance(LEASE + Duration::from_secs(1));
    let err = t
        .store
        .complete(&a.key(), common::result("by a"))
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::LeaseLost { task_id: id });
    assert_eq!(err.code(), "lease_lost");
    assert_eq!(t.store.get(id).await.unwrap().status, TaskStatus::Running);

    // Reaped and claimed by another worker: the stale worker still changes nothing.
    assert_eq!(t.store.reap_expired().await.unwrap().requeued, vec![id]);
    t.clock.advance(Duration::from_secs(2));
    let b = t.store.claim("b", 1, LEASE).await.unwrap().remove(0);
    assert_eq!((b.task.id, b.task.attempt), (id, 2));
    assert!(t
        .store
        .complete(&a.key(), common::result("by a"))
        .await
        .is_err());
    assert!(t.store.fail(&a.key(), "boom", true).await.is_err());
    assert_eq!(
        t.store.heartbeat(&[a.key()], LEASE).await.unwrap().lost,
        vec![a.key()]
    );
    let now = t.store.get(id).await.unwrap();
    assert_eq!((now.status, now.result), (TaskStatus::Running, None));
    assert!(t.store.outbox_for_task(id).await.unwrap().is_empty());

    t.store
        .complete(&b.key(), common::result("by b"))
        .await
        .unwrap();
    let done = t.store.get(id).await.unwrap();
    assert_eq!(done.result, Some(common::result("by b")));
    assert_eq!(t.store.outbox_for_task(id).await.unwrap().len(), 1);
    let history: Vec<_> = t.store.attempts(id).await.unwrap();
    let outcomes: Vec<_> = history
        .iter()
        .map(|h| (h.worker.as_str(), h.outcome.as_str()))
        .collect();
    assert_eq!(outcomes, [("a", "lease_expired"), ("b", "completed")]);
}

async fn failed_attempts_retry_with_exponential_backoff(t: TestDb) {
    let mut new = task("flaky");
    new.max_attempts = 5;
    let id = t.store.create(new).await.unwrap().task.id;
    for (attempt, base_ms) in [(1u32, 1000i64), (2, 2000), (3, 4000)] {
        let l = t.store.claim("w", 1, LEASE).await.unwrap().remove(0);
        assert_eq!(l.task.attempt, attempt);
        let now = t.clock_now();
        let FailOutcome::Retrying { run_at } =
            t.store.fail(&l.key(), "transient", true).await.unwrap()
        else {
            panic!("attempt {attempt} should be retried");
        };
        let delay = (run_at - now).num_milliseconds();
        assert!(
            delay >= base_ms * 8 / 10 && delay <= base_ms * 12 / 10,
            "attempt {attempt}: delay {delay} ms, expected {base_ms} ms +-20%"
        );
        let queued = t.store.get(id).await.unwrap();
        assert_eq!(
            (queued.status, queued.error.as_deref()),
            (TaskStatus::Queued, Some("transient"))
        );
        assert!(
            t.store.claim("w", 1, LEASE).await.unwrap().is_empty(),
            "not before run_at"
        );
        t.clock
            .advance(Duration::from_millis(u64::try_from(delay).unwrap() + 1));
    }
    assert_eq!(
        t.store.claim("w", 1, LEASE).await.unwrap()[0].task.attempt,
        4
    );
}

async fn task_is_dead_after_max_attempts(t: TestDb) {
    let mut new = task_with_callback("doomed");
    new.max_attempts = 2;
    let id = t.store.create(new).await.unwrap().task.id;
    let l = t.store.claim("w", 1, LEASE).await.unwrap().remove(0);
    assert!(matches!(
        t.store.fail(&l.key(), "e1", true).await.unwrap(),
        FailOutcome::Retrying { .. }
    ));
    t.clock.advance(Duration::from_secs(5));
    let l = t.store.claim("w", 1, LEASE).await.unwrap().remove(0);
    assert_eq!(
        t.store.fail(&l.key(), "e2", true).await.unwrap(),
        FailOutcome::Dead
    );
    let dead = t.store.get(id).await.unwrap();
    assert_eq!(
        (dead.status, dead.error.as_deref()),
        (TaskStatus::Failed, Some("e2"))
    );
    assert!(dead.finished_at.is_some());
    t.clock.advance(Duration::from_secs(3600));
    assert!(t.store.claim("w", 1, LEASE).await.unwrap().is_empty());
    let outcomes: Vec<_> = t
        .store
        .attempts(id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.outcome, a.error))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("retry".to_owned(), Some("e1".to_owned())),
            ("failed".to_owned(), Some("e2".to_owned()))
        ]
    );
    let outbox = t.store.outbox_for_task(id).await.unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].payload["status"], "failed");
    assert_eq!(outbox[0].payload["error"], "e2");
}

async fn non_retryable_failure_is_dead_at_once(t: TestDb) {
    let id = t.store.create(task("bad request")).await.unwrap().task.id;
    let l = t.store.claim("w", 1, LEASE).await.unwrap().remove(0);
    assert_eq!(
        t.store
            .fail(&l.key(), "invalid template", false)
            .await
            .unwrap(),
        FailOutcome::Dead
    );
    assert_eq!(t.store.get(id).await.unwrap().status, TaskStatus::Failed);
}

async fn duplicate_unique_key_returns_the_existing_task(t: TestDb) {
    let mut first = task("first");
    first.unique_key = Some("idem-1".into());
    let a = t.store.create(first).await.unwrap();
    assert!(a.created);
    let mut again = task("second body");
    again.unique_key = Some("idem-1".into());
    let b = t.store.create(again).await.unwrap();
    assert!(!b.created);
    assert_eq!(b.task, a.task, "the existing task comes back unchanged");
    let mut elsewhere = common::task("other project");
    elsewhere.project = common::project("blog");
    elsewhere.unique_key = Some("idem-1".into());
    assert!(
        t.store.create(elsewhere).await.unwrap().created,
        "keys are per project"
    );
    let leases = t.store.claim("w", 10, LEASE).await.unwrap();
    assert_eq!(leases.len(), 2, "the duplicate was not queued");
}

async fn cancel_of_a_queued_task_removes_it_from_the_queue(t: TestDb) {
    let id = t
        .store
        .create(task_with_callback("x"))
        .await
        .unwrap()
        .task
        .id;
    let cancelled = t.store.cancel(id).await.unwrap();
    assert_eq!(cancelled.status, TaskStatus::Cancelled);
    assert!(cancelled.finished_at.is_some());
    assert!(t.store.claim("w", 10, LEASE).await.unwrap().is_empty());
    let err = t.store.cancel(id).await.unwrap_err();
    assert_eq!(err.code(), "invalid_transition");
    let outbox = t.store.outbox_for_task(id).await.unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].payload["status"], "cancelled");
    assert_eq!(
        t.store.cancel(TaskId::new()).await.unwrap_err().code(),
        "not_found"
    );
}

async fn cancel_of_a_running_task_revokes_its_lease(t: TestDb) {
    let id = t.store.create(task("x")).await.unwrap().task.id;
    let l = t.store.claim("w", 1, LEASE).await.unwrap().remove(0);
    assert_eq!(
        t.store.cancel(id).await.unwrap().status,
        TaskStatus::Cancelled
    );
    assert_eq!(
        t.store.heartbeat(&[l.key()], LEASE).await.unwrap().lost,
        vec![l.key()]
    );
    assert!(matches!(
        t.store.complete(&l.key(), BuildResult::default()).await,
        Err(StoreError::LeaseLost { .. })
    ));
    assert_eq!(t.store.get(id).await.unwrap().status, TaskStatus::Cancelled);
    assert_eq!(t.store.attempts(id).await.unwrap()[0].outcome, "cancelled");
    t.clock.advance(LEASE * 2);
    assert_eq!(t.store.reap_expired().await.unwrap(), Default::default());
}

async fn claim_follows_priority_then_run_at_and_skips_delayed_tasks(t: TestDb) {
    common::parallel_site(&t.store).await;
    let now = t.clock_now();
    let mut a = task("a");
    a.run_at = Some(now);
    let mut b = task("b");
    b.priority = -1;
    let mut c = task("c");
    c.run_at = Some(now + chrono::Duration::seconds(10));
    let mut d = task("d");
    d.run_at = Some(now - chrono::Duration::seconds(5));
    t.store.create_many(vec![a, b, c, d]).await.unwrap();
    let mut order = Vec::new();
    while let Some(l) = t.store.claim("w", 1, LEASE).await.unwrap().pop() {
        order.push(l.task.spec.prompt);
    }
    assert_eq!(order, ["b", "d", "a"]);
    t.clock.advance(Duration::from_secs(11));
    assert_eq!(
        t.store.claim("w", 1, LEASE).await.unwrap()[0]
            .task
            .spec
            .prompt,
        "c"
    );
}

async fn heartbeat_extends_held_leases_and_reports_lost_ones(t: TestDb) {
    common::parallel_site(&t.store).await;
    t.store
        .create_many(vec![task("a"), task("b")])
        .await
        .unwrap();
    let leases = t
        .store
        .claim("w", 2, Duration::from_secs(10))
        .await
        .unwrap();
    let keys: Vec<LeaseKey> = leases.iter().map(|l| l.key()).collect();
    t.clock.advance(Duration::from_secs(8));
    let hb = t
        .store
        .heartbeat(&keys, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(hb.lost.is_empty());
    assert_eq!(
        hb.extended_until,
        t.clock_now() + chrono::Duration::seconds(10)
    );
    t.clock.advance(Duration::from_secs(8));
    t.store
        .complete(&keys[0], BuildResult::default())
        .await
        .unwrap();
    t.store.cancel(keys[1].task_id).await.unwrap();
    assert_eq!(
        t.store
            .heartbeat(&keys, Duration::from_secs(10))
            .await
            .unwrap()
            .lost
            .len(),
        2
    );
}

async fn same_worker_claiming_a_task_again_keeps_the_new_lease_apart_from_the_old(t: TestDb) {
    let id = t.store.create(task("again")).await.unwrap().task.id;
    let old = t.store.claim("w", 1, LEASE).await.unwrap().remove(0);
    t.clock.advance(LEASE + Duration::from_secs(1));
    assert_eq!(t.store.reap_expired().await.unwrap().requeued, vec![id]);
    t.clock.advance(Duration::from_secs(2));
    let new = t.store.claim("w", 1, LEASE).await.unwrap().remove(0);
    assert_eq!((new.task.id, new.task.attempt), (id, 2));
    // The node still runs the old attempt for a moment: one heartbeat carries both leases.
    let hb = t
        .store
        .heartbeat(&[old.key(), new.key()], LEASE)
        .await
        .unwrap();
    assert_eq!(hb.lost, vec![old.key()]);
    t.store
        .complete(&new.key(), common::result("attempt 2"))
        .await
        .unwrap();
    assert_eq!(t.store.get(id).await.unwrap().status, TaskStatus::Completed);
}

async fn heartbeat_of_held_and_lost_leases_together_reports_only_the_lost(t: TestDb) {
    common::parallel_site(&t.store).await;
    t.store
        .create_many(vec![task("a"), task("b"), task("c")])
        .await
        .unwrap();
    let leases = t
        .store
        .claim("w", 3, Duration::from_secs(10))
        .await
        .unwrap();
    let mut keys: Vec<LeaseKey> = leases.iter().map(|l| l.key()).collect();
    t.store.cancel(keys[1].task_id).await.unwrap();
    // A key with the right task but a wrong token is lost too.
    keys[2].token = LeaseToken(uuid::Uuid::new_v4());
    t.clock.advance(Duration::from_secs(8));
    let hb = t
        .store
        .heartbeat(&keys, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(hb.lost, vec![keys[1], keys[2]]);
    // The held one was extended: it can still complete after its first lease ran out.
    t.clock.advance(Duration::from_secs(8));
    t.store
        .complete(&keys[0], BuildResult::default())
        .await
        .unwrap();
}

async fn reaper_requeues_expired_leases_and_kills_exhausted_tasks(t: TestDb) {
    common::parallel_site(&t.store).await;
    let mut once = task_with_callback("once");
    once.max_attempts = 1;
    let once = t.store.create(once).await.unwrap().task.id;
    let retry = t.store.create(task("retry")).await.unwrap().task.id;
    t.store.claim("w", 2, Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        t.store.reap_expired().await.unwrap(),
        Default::default(),
        "nothing expired yet"
    );
    t.clock.advance(Duration::from_secs(6));
    let report = t.store.reap_expired().await.unwrap();
    assert_eq!((report.requeued, report.dead), (vec![retry], vec![once]));
    let dead = t.store.get(once).await.unwrap();
    assert_eq!(dead.status, TaskStatus::Failed);
    assert!(dead.error.unwrap().contains("lease expired"));
    assert_eq!(t.store.outbox_for_task(once).await.unwrap().len(), 1);
    let queued = t.store.get(retry).await.unwrap();
    assert_eq!((queued.status, queued.attempt), (TaskStatus::Queued, 1));
    assert_eq!(t.store.reap_expired().await.unwrap(), Default::default());
    t.clock.advance(Duration::from_secs(2));
    assert_eq!(
        t.store.claim("w", 2, LEASE).await.unwrap()[0].task.attempt,
        2
    );
}

async fn completion_writes_result_and_callback_row_together(t: TestDb) {
    let with_cb = t
        .store
        .create(task_with_callback("cb"))
        .await
        .unwrap()
        .task
        .id;
    let without = t.store.create(task("no cb")).await.unwrap().task.id;
    for l in t.store.claim("w", 2, LEASE).await.unwrap() {
        let result = BuildResult {
            output: "done".into(),
            cost_usd: Some(0.25),
            duration_ms: Some(1200),
            ..BuildResult::default()
        };
        t.store.complete(&l.key(), result).await.unwrap();
    }
    let done = t.store.get(with_cb).await.unwrap();
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.result.as_ref().unwrap().output, "done");
    let outbox = t.store.outbox_for_task(with_cb).await.unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].url, "https://bot.example/callback");
    assert_eq!(
        outbox[0].payload,
        serde_json::to_value(callback_payload(&done)).unwrap()
    );
    assert_eq!(outbox[0].payload["cost_usd"], 0.25);
    assert!(t.store.outbox_for_task(without).await.unwrap().is_empty());
}

async fn a_failure_after_the_push_keeps_its_result_in_the_task_and_callback(t: TestDb) {
    let id = t
        .store
        .create(task_with_callback("ci"))
        .await
        .unwrap()
        .task
        .id;
    let l = t.store.claim("w", 1, LEASE).await.unwrap().remove(0);
    assert!(
        l.task.attempt < rdev_core::NewTask::DEFAULT_MAX_ATTEMPTS,
        "attempts remain"
    );
    let result = BuildResult {
        output: "done".into(),
        artifacts: rdev_core::Artifacts {
            commit_sha: Some("abc1234".into()),
            ..Default::default()
        },
        pipeline: Some(rdev_core::PipelineReport {
            number: 3,
            status: "failure".into(),
            url: "http://ci/repos/1/pipeline/3".into(),
        }),
        ..BuildResult::default()
    };
    let error = "CI pipeline #3 ended with status failure";
    t.store
        .fail_with_result(&l.key(), error, result.clone())
        .await
        .unwrap();
    let failed = t.store.get(id).await.unwrap();
    assert_eq!(failed.status, TaskStatus::Failed, "not retried");
    assert_eq!(failed.error.as_deref(), Some(error));
    assert_eq!(failed.result, Some(result));
    let outbox = t.store.outbox_for_task(id).await.unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(
        outbox[0].payload,
        serde_json::to_value(callback_payload(&failed)).unwrap()
    );
    assert_eq!(outbox[0].payload["status"], "failed");
    assert_eq!(outbox[0].payload["error"], error);
    assert_eq!(
        outbox[0].payload["result"]["artifacts"]["commit_sha"],
        "abc1234"
    );
    assert_eq!(outbox[0].payload["result"]["pipeline"]["number"], 3);

    // Without the lease nothing is written, the result neither.
    let other = t.store.create(task("cancelled")).await.unwrap().task.id;
    let l = t.store.claim("w", 1, LEASE).await.unwrap().remove(0);
    t.store.cancel(other).await.unwrap();
    let err = t
        .store
        .fail_with_result(&l.key(), "late", common::result("late"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err}");
    let cancelled = t.store.get(other).await.unwrap();
    assert_eq!(
        (cancelled.status, cancelled.result),
        (TaskStatus::Cancelled, None)
    );
}

async fn batched_completion_reports_lost_leases(t: TestDb) {
    common::parallel_site(&t.store).await;
    t.store
        .create_many(vec![task("a"), task("b"), task("c")])
        .await
        .unwrap();
    let leases = t.store.claim("w", 3, LEASE).await.unwrap();
    t.store.cancel(leases[1].task.id).await.unwrap();
    let items: Vec<_> = leases
        .iter()
        .map(|l| (l.key(), common::result("ok")))
        .collect();
    let report = t.store.complete_many(&items).await.unwrap();
    assert_eq!(report.completed, vec![leases[0].task.id, leases[2].task.id]);
    assert_eq!(report.lost, vec![leases[1].task.id]);
}

trait ClockNow {
    fn clock_now(&self) -> chrono::DateTime<chrono::Utc>;
}

impl ClockNow for TestDb {
    fn clock_now(&self) -> chrono::DateTime<chrono::Utc> {
        rdev_core::Clock::now(&self.clock)
    }
}
