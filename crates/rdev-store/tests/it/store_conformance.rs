//! Store conformance: tasks, events, projects, the outbox and the schema, as one test body
//! per behaviour, run unchanged on PostgreSQL and SQLite (a fresh database each).

use std::time::Duration;

use rdev_core::{
    AuditAction, AuditEntry, AuditFilter, ErrorCode, KeyCheck, OutboxStore, Project, ProjectStore,
    SealedSecret, SecretName, SecretRepository, SecretScope, TaskFilter, TaskId, TaskStatus,
    TaskStore, WorkQueue,
};
use rdev_store::{Db, SqlSecretRepository};

use crate::common::{self, project, task, task_with_callback, TestDb};

rdev_testkit::both_backends!(
    tasks_read_back_and_list_newest_first_with_filters,
    unknown_task_is_not_found,
    events_are_numbered_per_task_without_gaps_and_replay_from_a_sequence,
    projects_round_trip_and_report_conflicts_and_missing_names,
    a_woodpecker_repository_given_by_name_round_trips,
    deleting_a_project_cancels_its_live_tasks_frees_its_keys_and_deletes_its_secrets,
    a_reused_idempotency_key_is_reported_only_for_a_different_request,
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
    let within = |projects: &[&str]| TaskFilter {
        projects: Some(projects.iter().map(|p| project(p)).collect()),
        ..Default::default()
    };
    let listed = |tasks: Vec<rdev_core::WorkTask>| tasks.iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(
        listed(t.store.list(&within(&["blog"])).await.unwrap()),
        [b.id]
    );
    assert_eq!(
        listed(t.store.list(&within(&["site", "blog"])).await.unwrap()),
        [c.id, b.id, a.id]
    );
    assert!(t.store.list(&within(&[])).await.unwrap().is_empty());
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

async fn a_woodpecker_repository_given_by_name_round_trips(t: TestDb) {
    let mut p: Project = serde_json::from_value(serde_json::json!({
        "name": "named", "repo_url": "/srv/git/named.git", "woodpecker_repo": "Acme/Site"
    }))
    .unwrap();
    t.store.create_project(&p).await.unwrap();
    let back = t.store.get_project(&p.name).await.unwrap();
    assert_eq!(back, p);
    let name = back.woodpecker_repo.as_ref().map(|r| r.as_str());
    assert_eq!((name, back.woodpecker_repo_id), (Some("Acme/Site"), None));
    // Switched to the id: the name is gone.
    p.woodpecker_repo = None;
    p.woodpecker_repo_id = Some(9);
    t.store.update_project(&p).await.unwrap();
    assert_eq!(t.store.get_project(&p.name).await.unwrap(), p);
    p.woodpecker_repo = Some(rdev_core::WoodpeckerRepo::parse("acme/other").unwrap());
    p.woodpecker_repo_id = None;
    t.store.update_project(&p).await.unwrap();
    assert_eq!(t.store.list_projects().await.unwrap(), vec![p]);
}

async fn projects_round_trip_and_report_conflicts_and_missing_names(t: TestDb) {
    let mut p: Project = serde_json::from_value(serde_json::json!({
        "name": "site", "repo_url": "/srv/git/site.git", "template": "astro-landing",
        "woodpecker_repo_id": 7, "deploy_url_pattern": "https://{project}.example",
        "provider": "claude-code"
    }))
    .unwrap();
    p.created_repo = Some("/srv/git/site.git".into());
    t.store.create_project(&p).await.unwrap();
    assert_eq!(t.store.get_project(&p.name).await.unwrap(), p);
    assert_eq!(
        p.push_protection,
        rdev_core::PushProtection::Block,
        "push protection blocks unless a project says otherwise"
    );
    assert_eq!(
        t.store.create_project(&p).await.unwrap_err().code(),
        "conflict"
    );
    p.default_branch = rdev_core::BranchName::parse("trunk").unwrap();
    p.provider = None;
    p.push_protection = rdev_core::PushProtection::Warn;
    p.push_protection_allow = vec!["tests/fixtures/**".into(), "*.pem".into()];
    p.created_repo = Some("/elsewhere/mine.git".into());
    t.store.update_project(&p).await.unwrap();
    p.created_repo = Some("/srv/git/site.git".into());
    assert_eq!(
        t.store.get_project(&p.name).await.unwrap(),
        p,
        "an update changes the fields, never the repository rdev created"
    );
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
    let deleted = t.store.delete_project(&p.name, "test").await.unwrap();
    assert_eq!(deleted.project, p);
    assert_eq!(
        t.store.get_project(&p.name).await.unwrap_err().code(),
        "not_found"
    );
    assert_eq!(
        t.store
            .delete_project(&p.name, "test")
            .await
            .unwrap_err()
            .code(),
        "not_found"
    );
}

fn sealed(scope: &str, name: &str, version: u32) -> (SealedSecret, AuditEntry) {
    let s = SealedSecret {
        scope: SecretScope::parse(scope).unwrap(),
        name: SecretName::parse(name).unwrap(),
        version,
        nonce: vec![1; 24],
        ciphertext: vec![2; 40],
        created_at: chrono::Utc::now(),
    };
    let audit = AuditEntry {
        at: s.created_at,
        scope: s.scope.clone(),
        name: s.name.clone(),
        version: Some(version),
        action: AuditAction::Write,
        actor: "test".into(),
        detail: None,
    };
    (s, audit)
}

async fn deleting_a_project_cancels_its_live_tasks_frees_its_keys_and_deletes_its_secrets(
    t: TestDb,
) {
    let site: Project = serde_json::from_value(serde_json::json!({
        "name": "site", "repo_url": "/data/repos/site.git", "created_repo": "/data/repos/site.git",
        "max_parallel_builds": 8,
    }))
    .unwrap();
    let blog: Project =
        serde_json::from_value(serde_json::json!({"name": "blog", "repo_url": "/x/blog.git"}))
            .unwrap();
    t.store.create_project(&site).await.unwrap();
    t.store.create_project(&blog).await.unwrap();
    let lease_for = Duration::from_secs(30);
    // Running, on a worker of another node.
    let other_node = t.another_store(common::test_config()).await;
    let running = t
        .store
        .create(task_with_callback("run"))
        .await
        .unwrap()
        .task;
    let lease = other_node
        .claim("w-remote", 1, lease_for)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(lease.task.id, running.id);
    // Finished, its callback not delivered yet.
    let done = t
        .store
        .create(task_with_callback("done"))
        .await
        .unwrap()
        .task;
    let l = t.store.claim("w", 1, lease_for).await.unwrap().remove(0);
    t.store
        .complete(&l.key(), common::result("ok"))
        .await
        .unwrap();
    // Queued, under an idempotency key.
    let mut keyed = task_with_callback("queued");
    keyed.unique_key = Some("k1".into());
    let queued = t.store.create(keyed.clone()).await.unwrap().task;
    let mut other = task("elsewhere");
    other.project = project("blog");
    let blog_task = t.store.create(other).await.unwrap().task;

    let secrets = SqlSecretRepository::new(t.db.clone());
    let check = KeyCheck {
        nonce: vec![9; 24],
        ciphertext: vec![9; 40],
        created_at: chrono::Utc::now(),
    };
    assert!(secrets.init_key_check(&check).await.unwrap());
    for (scope, name, version) in [
        ("project:site", "DEPLOY_TOKEN", 1),
        ("project:site", "DEPLOY_TOKEN", 2),
        ("project:site", "RDEV_WEBHOOK_SECRET", 1),
        ("project:blog", "DEPLOY_TOKEN", 1),
        ("global", "DEPLOY_TOKEN", 1),
    ] {
        let (s, a) = sealed(scope, name, version);
        secrets
            .insert_version(&s, &a, &check.ciphertext)
            .await
            .unwrap();
    }

    let deleted = t.store.delete_project(&site.name, "api").await.unwrap();
    assert_eq!(
        deleted.project, site,
        "the row as it was, created_repo included"
    );
    let mut expected = vec![running.id, queued.id];
    expected.sort();
    assert_eq!(deleted.cancelled, expected);
    assert_eq!(
        deleted
            .secrets_removed
            .iter()
            .map(|n| n.as_str())
            .collect::<Vec<_>>(),
        ["DEPLOY_TOKEN", "RDEV_WEBHOOK_SECRET"]
    );
    assert_eq!(
        deleted.callbacks_expired, 3,
        "the finished task's and the two cancellations'"
    );

    // The running task's worker lost its lease: its heartbeat says so, its writes fail.
    let beat = other_node
        .heartbeat(&[lease.key()], lease_for)
        .await
        .unwrap();
    assert_eq!(beat.lost.len(), 1, "{beat:?}");
    assert_eq!(
        other_node
            .complete(&lease.key(), common::result(""))
            .await
            .unwrap_err()
            .code(),
        "lease_lost"
    );
    let attempts = t.store.attempts(running.id).await.unwrap();
    assert_eq!(attempts.last().unwrap().outcome, "cancelled");
    for id in [running.id, queued.id] {
        assert_eq!(t.store.get(id).await.unwrap().status, TaskStatus::Cancelled);
    }
    assert_eq!(
        t.store.get(done.id).await.unwrap().status,
        TaskStatus::Completed,
        "finished tasks stay, as history"
    );
    assert_eq!(
        t.store.get(blog_task.id).await.unwrap().status,
        TaskStatus::Queued
    );
    for id in [running.id, done.id, queued.id] {
        let rows = t.store.outbox_for_task(id).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert!(rows[0].expired_at.is_some(), "{rows:?}");
        assert!(rows[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("project deleted"));
    }
    assert!(t
        .store
        .claim_due(10, Duration::from_secs(60))
        .await
        .unwrap()
        .is_empty());

    // Secrets: the project's are gone (signing secret included) and audited; others stay.
    let left: Vec<String> = secrets
        .list(None)
        .await
        .unwrap()
        .iter()
        .map(|m| format!("{}/{}", m.scope, m.name))
        .collect();
    assert_eq!(left, ["global/DEPLOY_TOKEN", "project:blog/DEPLOY_TOKEN"]);
    let audit = secrets
        .audit_log(&AuditFilter {
            scope: Some(SecretScope::parse("project:site").unwrap()),
            name: None,
            limit: 0,
        })
        .await
        .unwrap();
    let deletes: Vec<_> = audit
        .iter()
        .filter(|a| a.action == AuditAction::Delete)
        .collect();
    assert_eq!(deletes.len(), 2, "{audit:?}");
    assert!(deletes
        .iter()
        .all(|a| a.actor == "api" && a.detail.as_deref().unwrap().starts_with("project deleted")));

    assert_eq!(
        t.store.get_project(&site.name).await.unwrap_err().code(),
        "not_found"
    );
    t.store.get_project(&blog.name).await.unwrap();
    // Created again, the project starts empty: the old key makes a new task.
    t.store.create_project(&site).await.unwrap();
    let again = t.store.create(keyed).await.unwrap();
    assert!(again.created && !again.key_reused);
    assert_ne!(again.task.id, queued.id);
}

async fn a_reused_idempotency_key_is_reported_only_for_a_different_request(t: TestDb) {
    let keyed = |body: serde_json::Value| {
        let mut n = task("unused");
        n.spec = serde_json::from_value(body).unwrap();
        n.unique_key = Some("bot-msg-1".into());
        n
    };
    let first = t
        .store
        .create(keyed(
            serde_json::json!({"prompt": "Add a FAQ", "variables": {"a": "1", "b": "2"}}),
        ))
        .await
        .unwrap();
    assert!(first.created && !first.key_reused);
    // The same request, written differently.
    let same = t
        .store
        .create(keyed(
            serde_json::json!({"variables": {"b": "2", "a": "1"}, "model": null,
                                        "auto_deploy": false, "prompt": "Add a FAQ"}),
        ))
        .await
        .unwrap();
    assert!(!same.created && !same.key_reused);
    assert_eq!(same.task, first.task);
    // Another request under the same key: reported, nothing inserted.
    let other = t
        .store
        .create(keyed(serde_json::json!({"prompt": "Add a blog"})))
        .await
        .unwrap();
    assert!(!other.created && other.key_reused);
    assert_eq!(other.task, first.task, "the key's task, unchanged");
    assert_eq!(t.store.list(&TaskFilter::default()).await.unwrap().len(), 1);
    // A task stored before requests were fingerprinted cannot tell: the key still answers.
    match &t.db {
        Db::Postgres(p) => sqlx::query("UPDATE tasks SET request_hash = NULL")
            .execute(p)
            .await
            .map(|_| ()),
        Db::Sqlite(p) => sqlx::query("UPDATE tasks SET request_hash = NULL")
            .execute(p)
            .await
            .map(|_| ()),
    }
    .unwrap();
    let legacy = t
        .store
        .create(keyed(serde_json::json!({"prompt": "Add a blog"})))
        .await
        .unwrap();
    assert!(!legacy.created && !legacy.key_reused);
    assert_eq!(legacy.task.id, first.task.id);
}

async fn outbox_rows_are_claimed_held_and_marked(t: TestDb) {
    common::parallel_site(&t.store).await;
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
            .complete(&l.key(), common::result("ok"))
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
