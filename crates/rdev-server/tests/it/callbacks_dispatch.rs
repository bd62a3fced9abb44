//! The callback dispatcher against a real receiver: signed per Standard Webhooks, retried
//! while the receiver is down, delivered exactly once when it is back, attempts visible,
//! and never sent unsigned: a missing signing secret is an error on the task's delivery.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use rdev_core::{
    Artifacts, BuildResult, BuildSpec, NewTask, Project, ProjectName, RetryPolicy, SecretString,
    TaskId,
};
use rdev_server::{
    api::Store,
    callbacks::{
        dispatcher::{Delivery, DispatchConfig, Dispatcher, SigningKeys},
        signing::{generate_secret, verify},
    },
};
use rdev_store::{Db, SqlStore, StoreConfig};
use rdev_testkit::CallbackReceiver;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use crate::common;

#[derive(Debug)]
struct Fixed(Option<SecretString>);

#[async_trait]
impl SigningKeys for Fixed {
    async fn signing_secret(&self, _p: &ProjectName) -> Result<Option<SecretString>, String> {
        Ok(self.0.clone())
    }
}

/// A result with output `ok`, nothing pushed.
fn ok() -> BuildResult {
    BuildResult {
        output: "ok".into(),
        ..BuildResult::default()
    }
}

/// A SQLite store with project `site` and one task, claimed and completed with `result`,
/// whose callback is due to a fresh receiver. The directory holds the database.
async fn completed_task(
    result: BuildResult,
) -> (TempDir, Arc<dyn Store>, CallbackReceiver, TaskId) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite:{}", dir.path().join("t.db").display()))
        .await
        .unwrap();
    db.migrate().await.unwrap();
    let store: Arc<dyn Store> = Arc::new(SqlStore::new(db, StoreConfig::default()).await.unwrap());
    let name = ProjectName::parse("site").unwrap();
    store
        .create_project(
            &serde_json::from_value::<Project>(
                serde_json::json!({"name": "site", "repo_url": "/x.git"}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let receiver = CallbackReceiver::start().await.unwrap();
    let mut spec = BuildSpec::new("hello");
    spec.callback_url = Some(receiver.url());
    let task = store.create(NewTask::new(name, spec)).await.unwrap().task;
    let lease = store
        .claim("w", 1, Duration::from_secs(30))
        .await
        .unwrap()
        .remove(0);
    store.complete(&lease.key(), result).await.unwrap();
    (dir, store, receiver, task.id)
}

#[tokio::test]
async fn callback_is_signed_retried_while_down_and_delivered_once() {
    let (_dir, store, receiver, task_id) = completed_task(BuildResult {
        artifacts: Artifacts {
            commit_sha: Some("abc".into()),
            deploy_url: None,
            ..Artifacts::default()
        },
        ..ok()
    })
    .await;
    receiver.fail_with(503);
    let secret = generate_secret();
    let dispatcher = Dispatcher::new(
        Arc::clone(&store),
        Arc::new(Fixed(Some(secret.clone()))),
        DispatchConfig {
            allow_private: true,
            retry: RetryPolicy {
                base: Duration::from_millis(100),
                cap: Duration::from_millis(300),
                jitter: 0.2,
            },
            idle_poll: Duration::from_millis(50),
            ..DispatchConfig::default()
        },
    );
    let stop = CancellationToken::new();
    let handle = tokio::spawn(dispatcher.run(stop.clone()));

    // Down: at least two refused attempts, each recorded on the task's outbox row.
    let refused = receiver.wait_for_received(2, Duration::from_secs(20)).await;
    assert!(refused.len() >= 2, "no retries while the receiver is down");
    let rows = store.outbox_for_task(task_id).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].attempts >= 1);
    assert!(rows[0]
        .last_error
        .as_deref()
        .unwrap_or_default()
        .contains("503"));
    assert!(rows[0].delivered_at.is_none());

    receiver.recover();
    let accepted = receiver.wait_for_accepted(1, Duration::from_secs(20)).await;
    assert_eq!(accepted.len(), 1);
    // Once the row records the delivery the dispatcher never sends it again; until then
    // the receiver has seen it exactly once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while store.outbox_for_task(task_id).await.unwrap()[0]
        .delivered_at
        .is_none()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "delivery never recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(receiver.accepted().len(), 1, "delivered exactly once");
    stop.cancel();
    handle.await.unwrap();

    let cb = &accepted[0];
    let all = receiver.received();
    assert!(
        all.iter().all(|c| c.webhook_id == cb.webhook_id),
        "one webhook-id across retries"
    );
    verify(
        &secret,
        cb.webhook_id.as_deref().unwrap(),
        cb.webhook_timestamp.as_deref().unwrap(),
        cb.webhook_signature.as_deref().unwrap(),
        &cb.body,
        chrono::Utc::now().timestamp(),
    )
    .expect("signature verifies");
    let body = cb.json();
    assert_eq!(body["task_id"], task_id.to_string());
    assert_eq!(body["project_id"], "site");
    assert_eq!(body["status"], "completed");
    assert_eq!(body["result"]["artifacts"]["commit_sha"], "abc");
    let rows = store.outbox_for_task(task_id).await.unwrap();
    assert!(rows[0].delivered_at.is_some());
}

/// One delivery attempt of the task's callback by a dispatcher with `keys` and `config`.
async fn attempt_once(store: &Arc<dyn Store>, keys: Fixed, config: DispatchConfig) -> Delivery {
    let dispatcher = Dispatcher::new(Arc::clone(store), Arc::new(keys), config);
    let row = store
        .claim_due(1, Duration::from_secs(60))
        .await
        .unwrap()
        .remove(0);
    dispatcher.attempt(row).await
}

#[tokio::test]
async fn private_targets_are_refused_at_delivery_unless_allowed() {
    let (_dir, store, receiver, task_id) = completed_task(ok()).await;

    let keys = Fixed(Some(generate_secret()));
    let outcome = attempt_once(&store, keys, DispatchConfig::default()).await;
    assert!(
        matches!(&outcome, Delivery::Failed(e) if e.contains("private")),
        "{outcome:?}"
    );
    assert!(
        receiver.received().is_empty(),
        "nothing was sent to a loopback target"
    );
    let rows = store.outbox_for_task(task_id).await.unwrap();
    assert_eq!(rows[0].attempts, 1);
}

#[tokio::test]
async fn without_a_signing_secret_nothing_is_sent_and_the_attempt_says_why() {
    let (_dir, store, receiver, task_id) = completed_task(ok()).await;
    let config = DispatchConfig {
        allow_private: true,
        ..DispatchConfig::default()
    };
    let outcome = attempt_once(&store, Fixed(None), config).await;
    assert!(
        matches!(&outcome, Delivery::Failed(e) if e.contains("never sent unsigned")),
        "{outcome:?}"
    );
    assert!(receiver.received().is_empty(), "nothing was POSTed");
    let rows = store.outbox_for_task(task_id).await.unwrap();
    assert_eq!(rows[0].attempts, 1);
    assert!(rows[0].delivered_at.is_none());
    assert!(
        rows[0]
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("no callback signing secret"),
        "{:?}",
        rows[0].last_error
    );
    assert!(
        rows[0].expired_at.is_none(),
        "retried: rotating the secret lets it through"
    );
}

/// The whole application: the project's signing secret disappears (the API cannot delete
/// it, so around it, as a lost row would), the task's callback fails visibly in
/// `GET /tasks/{id}` without any request reaching the receiver, and rotating the secret
/// lets the next attempt through, signed with the new secret.
#[tokio::test]
async fn a_lost_signing_secret_shows_on_the_task_until_rotated_and_nothing_goes_unsigned() {
    let app = common::spawn_app_configured(None, |c| c.allow_private_callbacks = true).await;
    let http = reqwest::Client::new();
    let base = &app.address;
    let r = http
        .post(format!("{base}/projects"))
        .json(&serde_json::json!({"name": "site", "repo_url": "/x.git"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let receiver = CallbackReceiver::start().await.unwrap();
    let body = serde_json::json!({"prompt": "hello", "callback_url": receiver.url()});
    let task_id = common::start_build(&http, base, "site", body).await;

    let url = format!("sqlite:{}", app._dir.path().join("rdev.db").display());
    let db = Db::connect(&url).await.unwrap();
    let Db::Sqlite(pool) = &db else {
        unreachable!("the test app runs on SQLite")
    };
    let gone = sqlx::query("DELETE FROM secrets WHERE name = 'RDEV_WEBHOOK_SECRET'")
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(gone.rows_affected(), 1);
    // Finish the task as a worker would (the app runs none).
    let store: Arc<dyn Store> = Arc::new(
        SqlStore::new(db.clone(), StoreConfig::default())
            .await
            .unwrap(),
    );
    let lease = store
        .claim("w", 1, Duration::from_secs(30))
        .await
        .unwrap()
        .remove(0);
    store.complete(&lease.key(), ok()).await.unwrap();

    let task = common::wait_for_task(&http, base, &task_id, Duration::from_secs(20), |t| {
        t["callbacks"][0]["attempts"].as_u64() >= Some(1)
    })
    .await;
    let delivery = &task["callbacks"][0];
    assert!(delivery["attempts"].as_u64() >= Some(1), "{task}");
    assert!(
        delivery["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("never sent unsigned"),
        "{task}"
    );
    assert!(delivery["delivered_at"].is_null(), "{task}");
    assert!(receiver.received().is_empty(), "nothing was POSTed");

    let r = http
        .post(format!("{base}/projects/site/webhook-secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let secret = SecretString::new(
        r.json::<serde_json::Value>().await.unwrap()["webhook_secret"]
            .as_str()
            .unwrap(),
    );
    let accepted = receiver.wait_for_accepted(1, Duration::from_secs(30)).await;
    assert_eq!(accepted.len(), 1, "delivered after the rotation");
    assert_eq!(receiver.received().len(), 1, "and never before it");
    let cb = &accepted[0];
    verify(
        &secret,
        cb.webhook_id.as_deref().unwrap(),
        cb.webhook_timestamp.as_deref().unwrap(),
        cb.webhook_signature.as_deref().expect("signed"),
        &cb.body,
        chrono::Utc::now().timestamp(),
    )
    .expect("signed with the rotated secret");
}
