//! Per-project ordering in the claim: a project runs at most `max_parallel_builds` builds
//! at once (1 when it says nothing, or has no row), strictly in submission order, on both
//! backends; and, on PostgreSQL, many claimers at once never exceed a project's limit.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use rdev_core::{
    BuildResult, FailOutcome, NewTask, Project, ProjectStore, TaskId, TaskStatus, TaskStore,
    WorkQueue,
};
use rdev_store::{Backend, Db, SqlStore};

use crate::common::{project, task, TestDb};

const LEASE: Duration = Duration::from_secs(30);

rdev_testkit::both_backends!(
    a_project_runs_one_build_at_a_time_in_submission_order,
    a_limit_of_two_runs_the_first_two_at_once,
    a_retry_in_backoff_keeps_its_place_and_holds_back_its_project,
    cancelling_the_head_lets_the_next_task_run,
);

fn now(t: &TestDb) -> chrono::DateTime<chrono::Utc> {
    rdev_core::Clock::now(&t.clock)
}

/// A task of project `name`.
fn task_of(name: &str, prompt: &str) -> NewTask {
    let mut t = task(prompt);
    t.project = project(name);
    t
}

/// Creates project `name` allowing `limit` builds at once.
async fn project_with_limit(store: &SqlStore, name: &str, limit: u32) {
    let p: Project = serde_json::from_value(serde_json::json!({
        "name": name, "repo_url": format!("/srv/git/{name}.git"), "max_parallel_builds": limit,
    }))
    .unwrap();
    store.create_project(&p).await.unwrap();
    assert_eq!(
        store
            .get_project(&p.name)
            .await
            .unwrap()
            .max_parallel_builds,
        limit
    );
}

/// Ids of what `claim(max)` returned, in submission order.
async fn claim_ids(store: &SqlStore, max: u32) -> Vec<TaskId> {
    let mut ids: Vec<TaskId> = store
        .claim("w", max, LEASE)
        .await
        .unwrap()
        .iter()
        .map(|l| l.task.id)
        .collect();
    ids.sort();
    ids
}

async fn a_project_runs_one_build_at_a_time_in_submission_order(t: TestDb) {
    let now = now(&t);
    let first = t.store.create(task("first")).await.unwrap().task.id;
    // Submitted later, yet ahead in claim order (priority, then run_at): within a project
    // submission order wins.
    let mut urgent = task("second, urgent");
    urgent.priority = -5;
    urgent.run_at = Some(now - chrono::Duration::seconds(60));
    let second = t.store.create(urgent).await.unwrap().task.id;
    let third = t.store.create(task("third")).await.unwrap().task.id;
    // Another project (no row either) is not held back.
    let blog = t.store.create(task_of("blog", "b")).await.unwrap().task.id;

    let leases = t.store.claim("w", 10, LEASE).await.unwrap();
    let mut got: Vec<TaskId> = leases.iter().map(|l| l.task.id).collect();
    got.sort();
    assert_eq!(got, vec![first, blog], "one build of site, and blog's");
    assert!(
        claim_ids(&t.store, 10).await.is_empty(),
        "site is at its limit until its build ends"
    );
    let head = leases.iter().find(|l| l.task.id == first).unwrap();
    t.store
        .complete(&head.key(), BuildResult::default())
        .await
        .unwrap();
    let next = t.store.claim("w", 10, LEASE).await.unwrap();
    assert_eq!(
        next.iter().map(|l| l.task.id).collect::<Vec<_>>(),
        vec![second]
    );
    t.store.fail(&next[0].key(), "broken", false).await.unwrap();
    assert_eq!(claim_ids(&t.store, 10).await, vec![third]);
}

async fn a_limit_of_two_runs_the_first_two_at_once(t: TestDb) {
    project_with_limit(&t.store, "site", 2).await;
    let ids: Vec<TaskId> = t
        .store
        .create_many((0..4).map(|i| task(&format!("job {i}"))).collect())
        .await
        .unwrap()
        .iter()
        .map(|e| e.task.id)
        .collect();
    let leases = t.store.claim("w", 10, LEASE).await.unwrap();
    let mut got: Vec<TaskId> = leases.iter().map(|l| l.task.id).collect();
    got.sort();
    assert_eq!(got, ids[..2].to_vec());
    assert!(claim_ids(&t.store, 10).await.is_empty());
    t.store
        .complete(&leases[0].key(), BuildResult::default())
        .await
        .unwrap();
    assert_eq!(claim_ids(&t.store, 10).await, vec![ids[2]]);
    assert!(claim_ids(&t.store, 10).await.is_empty());
}

async fn a_retry_in_backoff_keeps_its_place_and_holds_back_its_project(t: TestDb) {
    let a = t.store.create(task("a")).await.unwrap().task.id;
    let b = t.store.create(task("b")).await.unwrap().task.id;
    let lease = t.store.claim("w", 10, LEASE).await.unwrap().remove(0);
    assert_eq!(lease.task.id, a);
    let FailOutcome::Retrying { run_at } = t.store.fail(&lease.key(), "flaky", true).await.unwrap()
    else {
        panic!("a retryable failure with attempts left is retried");
    };
    assert!(run_at > now(&t), "backoff puts the retry ahead in time");
    // `a` is not due, and `b` is behind it: nothing of site runs meanwhile.
    let blog = t.store.create(task_of("blog", "x")).await.unwrap().task.id;
    assert_eq!(claim_ids(&t.store, 10).await, vec![blog]);
    assert!(claim_ids(&t.store, 10).await.is_empty());
    let wait = (run_at - now(&t)).to_std().unwrap() + Duration::from_millis(1);
    t.clock.advance(wait);
    assert_eq!(claim_ids(&t.store, 10).await, vec![a], "the retry first");
    assert!(claim_ids(&t.store, 10).await.is_empty(), "b still waits");
    assert_eq!(t.store.get(b).await.unwrap().status, TaskStatus::Queued);
}

async fn cancelling_the_head_lets_the_next_task_run(t: TestDb) {
    let ids: Vec<TaskId> = t
        .store
        .create_many((0..3).map(|i| task(&format!("job {i}"))).collect())
        .await
        .unwrap()
        .iter()
        .map(|e| e.task.id)
        .collect();
    // A queued head cancelled: the next one is first now.
    t.store.cancel(ids[0]).await.unwrap();
    assert_eq!(claim_ids(&t.store, 10).await, vec![ids[1]]);
    assert!(claim_ids(&t.store, 10).await.is_empty());
    // A running one cancelled frees the project's place at once.
    t.store.cancel(ids[1]).await.unwrap();
    assert_eq!(claim_ids(&t.store, 10).await, vec![ids[2]]);
}

/// Running tasks per project, read straight from the table.
async fn running_per_project(db: &Db) -> HashMap<String, i64> {
    let Db::Postgres(pool) = db else {
        unreachable!("PostgreSQL only")
    };
    sqlx::query_as::<_, (String, i64)>(
        "SELECT project, count(*) FROM tasks WHERE status = 'running' GROUP BY project",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

/// Eight claimers on their own connection pools (eight nodes) burn down tasks of four
/// projects with limits 1, 1, 2 and 3, claiming three at a time; after every claim the
/// claimer counts the running rows of each project, which never exceed its limit, and
/// the single-build projects ran their tasks in submission order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claimers_never_exceed_a_projects_limit_on_postgres() {
    const PER_PROJECT: usize = 30;
    let t = TestDb::fresh(Backend::Postgres).await;
    let limits: [(&str, u32); 4] = [("one", 1), ("uno", 1), ("two", 2), ("three", 3)];
    for (name, limit) in limits {
        if limit > 1 {
            project_with_limit(&t.store, name, limit).await;
        }
    }
    let mut submitted: HashMap<&str, Vec<TaskId>> = HashMap::new();
    for i in 0..PER_PROJECT {
        // Interleaved, so every project always has work queued behind its running ones.
        for (name, _) in limits {
            let id = t
                .store
                .create(task_of(name, &format!("{name} {i}")))
                .await
                .unwrap()
                .task
                .id;
            submitted.entry(name).or_default().push(id);
        }
    }
    let total = PER_PROJECT * limits.len();
    let claimed: Arc<Mutex<Vec<(String, TaskId)>>> = Arc::default();
    let mut handles = Vec::new();
    for w in 0..8 {
        let store = t.another_store(crate::common::test_config()).await;
        let db = Db::connect(&t.url).await.unwrap();
        let claimed = Arc::clone(&claimed);
        handles.push(tokio::spawn(async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            let mut max_seen: HashMap<String, i64> = HashMap::new();
            loop {
                if claimed.lock().unwrap().len() >= total {
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "burn-down stalled");
                let leases = store.claim(&format!("w{w}"), 3, LEASE).await.unwrap();
                for (project, n) in running_per_project(&db).await {
                    let m = max_seen.entry(project).or_default();
                    *m = (*m).max(n);
                }
                {
                    let mut c = claimed.lock().unwrap();
                    c.extend(
                        leases
                            .iter()
                            .map(|l| (l.task.project.to_string(), l.task.id)),
                    );
                }
                if leases.is_empty() {
                    tokio::task::yield_now().await;
                }
                for l in &leases {
                    tokio::task::yield_now().await;
                    store
                        .complete(&l.key(), BuildResult::default())
                        .await
                        .unwrap();
                }
            }
            db.close().await;
            store.shutdown();
            max_seen
        }));
    }
    let mut max_seen: HashMap<String, i64> = HashMap::new();
    for h in handles {
        for (project, n) in h.await.unwrap() {
            let m = max_seen.entry(project).or_default();
            *m = (*m).max(n);
        }
    }
    for (name, limit) in limits {
        let seen = max_seen.get(name).copied().unwrap_or(0);
        assert!(
            seen <= i64::from(limit),
            "{name}: {seen} running at once, limit {limit}"
        );
        assert!(seen >= 1, "{name}: never seen running");
    }
    assert!(
        max_seen.values().any(|n| *n >= 2),
        "no project ever had two builds running: the claimers never raced ({max_seen:?})"
    );
    let claimed = claimed.lock().unwrap().clone();
    assert_eq!(claimed.len(), total, "every task claimed exactly once");
    for name in ["one", "uno"] {
        let order: Vec<TaskId> = claimed
            .iter()
            .filter(|(p, _)| p == name)
            .map(|(_, id)| *id)
            .collect();
        assert_eq!(order, submitted[name], "{name} ran in submission order");
    }
}
