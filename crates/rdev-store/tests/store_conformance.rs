//! Store conformance: tasks, events, projects, the outbox and the schema, as one test body
//! per behaviour, run unchanged on PostgreSQL and SQLite (a fresh database each).

mod common;

use std::time::Duration;

use common::{project, task, task_with_callback, TestDb};
use rdev_core::{
    ErrorCode, OutboxStore, Project, ProjectStore, TaskFilter, TaskId, TaskStatus, TaskStore,
    WorkQueue,
};
use rdev_store::Db;

conformance!(
    tasks_read_back_and_list_newest_first_with_filters,
    unknown_task_is_not_found,
    events_are_numbered_per_task_without_gaps_and_replay_from_a_sequence,
    projects_round_trip_and_report_conflicts_and_missing_names,
    outbox_rows_are_claimed_held_and_marked,
    migrations_are_idempotent_and_create_the_credential_tables,
    status_counts_reflect_the_queue,
);

async fn status_counts_reflect_the_queue(t: TestDb) {
    assert!(t.store.status_counts().await.unwrap().is_empty());
    for name in ["a", "b", "c"] {
        t.store.create(task(name)).await.unwrap();
    }
    t.store
        .claim("w", 1, Duration::from_secs(30))
        .await
        .unwrap();
    let counts = t.store.status_counts().await.unwrap();
    assert!(counts.contains(&(TaskStatus::Queued, 2)), "{counts:?}");
    assert!(counts.contains(&(TaskStatus::Running, 1)), "{counts:?}");
    assert_eq!(counts.len(), 2);
}

async fn tasks_read_back_and_list_newest_first_with_filters(t: TestDb) {
    let a = t.store.create(task("a")).await.unwrap().task;
    assert_eq!(t.store.get(a.id).await.unwrap(), a);
    assert_eq!(
        (a.status, a.attempt, a.started_at),
        (TaskStatus::Queued, 0, None)
    );
    let mut other = task("b");
    other.project = project("blog");
    let b = t.store.create(other).await.unwrap().task;
    let c = t.store.create(task("c")).await.unwrap().task;
    t.store
        .claim("w", 1, Duration::from_secs(30))
        .await
        .unwrap();

    let all = t.store.list(&TaskFilter::default()).await.unwrap();
    assert_eq!(
        all.iter().map(|t| t.id).collect::<Vec<_>>(),
        [c.id, b.id, a.id]
    );
    let site = TaskFilter {
        project: Some(project("site")),
        ..Default::default()
    };
    let ids: Vec<TaskId> = t
        .store
        .list(&site)
        .await
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids, [c.id, a.id]);
    let running = TaskFilter {
        status: Some(TaskStatus::Running),
        ..Default::default()
    };
    let got = t.store.list(&running).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, a.id, "the oldest runnable task was claimed");
    let page = TaskFilter {
        before: Some(c.id),
        limit: 1,
        ..Default::default()
    };
    assert_eq!(t.store.list(&page).await.unwrap()[0].id, b.id);
}

async fn unknown_task_is_not_found(t: TestDb) {
    let err = t.store.get(TaskId::new()).await.unwrap_err();
    assert_eq!(err.code(), "not_found");
    let err = t
        .store
        .append_event(TaskId::new(), "message", serde_json::json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "not_found");
}

async fn events_are_numbered_per_task_without_gaps_and_replay_from_a_sequence(t: TestDb) {
    let one = t.store.create(task("one")).await.unwrap().task.id;
    let two = t.store.create(task("two")).await.unwrap().task.id;
    let mut writers = Vec::new();
    for w in 0..4 {
        let store = t.store.clone();
        let id = if w % 2 == 0 { one } else { two };
        writers.push(tokio::spawn(async move {
            for i in 0..25 {
                let payload = serde_json::json!({"writer": w, "i": i});
                store.append_event(id, "message", payload).await.unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    for id in [one, two] {
        let events = t.store.events_since(id, 0, 1000).await.unwrap();
        let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
        assert!(events
            .iter()
            .all(|e| e.task_id == id && e.kind == "message"));
    }
    let tail = t.store.events_since(one, 45, 1000).await.unwrap();
    assert_eq!(
        tail.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [46, 47, 48, 49, 50]
    );
    assert_eq!(t.store.events_since(one, 0, 3).await.unwrap().len(), 3);
}

async fn projects_round_trip_and_report_conflicts_and_missing_names(t: TestDb) {
    let mut p: Project = serde_json::from_value(serde_json::json!({
        "name": "site", "repo_url": "/srv/git/site.git", "template": "astro-landing",
        "woodpecker_repo_id": 7, "deploy_url_pattern": "https://{project}.example",
        "provider": "claude-code"
    }))
    .unwrap();
    t.store.create_project(&p).await.unwrap();
    assert_eq!(t.store.get_project(&p.name).await.unwrap(), p);
    assert_eq!(
        t.store.create_project(&p).await.unwrap_err().code(),
        "conflict"
    );
    p.default_branch = "trunk".into();
    p.provider = None;
    t.store.update_project(&p).await.unwrap();
    assert_eq!(t.store.get_project(&p.name).await.unwrap(), p);
    let mut q = p.clone();
    q.name = project("another");
    assert_eq!(
        t.store.update_project(&q).await.unwrap_err().code(),
        "not_found"
    );
    t.store.create_project(&q).await.unwrap();
    let names: Vec<String> = t
        .store
        .list_projects()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name.to_string())
        .collect();
    assert_eq!(names, ["another", "site"]);
    t.store.delete_project(&p.name).await.unwrap();
    assert_eq!(
        t.store.get_project(&p.name).await.unwrap_err().code(),
        "not_found"
    );
    assert_eq!(
        t.store.delete_project(&p.name).await.unwrap_err().code(),
        "not_found"
    );
}

async fn outbox_rows_are_claimed_held_and_marked(t: TestDb) {
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            t.store
                .create(task_with_callback(&format!("t{i}")))
                .await
                .unwrap()
                .task
                .id,
        );
    }
    for l in t
        .store
        .claim("w", 3, Duration::from_secs(30))
        .await
        .unwrap()
    {
        t.store
            .complete(&l.key(), serde_json::json!({"output": "ok"}))
            .await
            .unwrap();
    }
    let hold = Duration::from_secs(60);
    let due = t.store.claim_due(10, hold).await.unwrap();
    assert_eq!(due.len(), 3);
    assert!(
        t.store.claim_due(10, hold).await.unwrap().is_empty(),
        "held rows are hidden"
    );

    let retry_at = rdev_core::Clock::now(&t.clock) + chrono::Duration::seconds(5);
    t.store
        .mark_failed(due[0].id, "HTTP 502", Some(retry_at))
        .await
        .unwrap();
    t.store.mark_delivered(due[1].id).await.unwrap();
    t.store
        .mark_failed(due[2].id, "HTTP 410", None)
        .await
        .unwrap();

    let first = &t.store.outbox_for_task(due[0].task_id).await.unwrap()[0];
    assert_eq!(
        (first.attempts, first.last_error.as_deref()),
        (1, Some("HTTP 502"))
    );
    assert_eq!(first.next_attempt_at, retry_at);
    let second = &t.store.outbox_for_task(due[1].task_id).await.unwrap()[0];
    assert!(second.delivered_at.is_some());
    let third = &t.store.outbox_for_task(due[2].task_id).await.unwrap()[0];
    assert!(third.expired_at.is_some());

    t.clock.advance(Duration::from_secs(6));
    let again = t.store.claim_due(10, hold).await.unwrap();
    assert_eq!(again.iter().map(|r| r.id).collect::<Vec<_>>(), [due[0].id]);
    assert_eq!(
        t.store.mark_delivered(-1).await.unwrap_err().code(),
        "not_found"
    );
}

async fn migrations_are_idempotent_and_create_the_credential_tables(t: TestDb) {
    t.db.migrate().await.unwrap();
    let now = rdev_core::Clock::now(&t.clock);
    let ts = rdev_store::Ts::from(now);
    macro_rules! exec {
        ($pool:ident, $sql:expr) => {
            sqlx::query($sql)
                .bind(ts)
                .bind(vec![1u8; 24])
                .bind(vec![2u8; 40])
                .execute($pool)
                .await
        };
    }
    macro_rules! on_db {
        ($p:ident => $body:block) => {
            match &t.db {
                Db::Postgres($p) => $body,
                Db::Sqlite($p) => $body,
            }
        };
    }
    on_db!(p => {
        exec!(p, "INSERT INTO secrets (scope, name, version, created_at, nonce, ciphertext) VALUES ('global', 'GIT_TOKEN', 1, $1, $2, $3)").unwrap();
        exec!(p, "INSERT INTO master_key_check (id, created_at, nonce, ciphertext) VALUES (1, $1, $2, $3)").unwrap();
        assert!(exec!(p, "INSERT INTO master_key_check (id, created_at, nonce, ciphertext) VALUES (2, $1, $2, $3)").is_err(), "one master key row only");
        sqlx::query("INSERT INTO secret_audit (at, scope, name, version, action, actor) VALUES ($1, 'global', 'GIT_TOKEN', 1, 'read', 'worker')").bind(ts).execute(p).await.unwrap();
    });
}
