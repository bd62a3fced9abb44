//! Discarding a project whose creation failed (`ProjectStore::discard_project`), run
//! unchanged on PostgreSQL and SQLite: the row goes and a task queued for it meanwhile is
//! cancelled with its key freed, as a deletion does, but secrets and API tokens stay.

use chrono::Utc;
use rdev_core::{
    queue::truncate_millis, ApiToken, AuditAction, AuditEntry, ErrorCode, KeyCheck, Project,
    ProjectStore, SealedSecret, SecretName, SecretRepository, SecretScope, TaskStatus, TaskStore,
    TokenHash, TokenName, TokenScope, TokenStore,
};
use rdev_store::{SqlSecretRepository, SqlTokenStore};

use crate::common::{project, task_with_callback, TestDb};

rdev_testkit::both_backends!(
    discarding_a_failed_creation_keeps_the_secrets_and_tokens_that_predate_it,
);

/// A secret stored before the project that uses it (the usual order), sealed with dummy
/// bytes: the store never opens one.
async fn store_secret(t: &TestDb, scope: &str, name: &str) -> SqlSecretRepository {
    let secrets = SqlSecretRepository::new(t.db.clone());
    let check = KeyCheck {
        nonce: vec![9; 24],
        ciphertext: vec![9; 40],
        created_at: Utc::now(),
    };
    secrets.init_key_check(&check).await.unwrap();
    let sealed = SealedSecret {
        scope: SecretScope::parse(scope).unwrap(),
        name: SecretName::parse(name).unwrap(),
        version: 1,
        nonce: vec![1; 24],
        ciphertext: vec![2; 40],
        created_at: Utc::now(),
    };
    let audit = AuditEntry {
        at: sealed.created_at,
        scope: sealed.scope.clone(),
        name: sealed.name.clone(),
        version: Some(1),
        action: AuditAction::Write,
        actor: "test".into(),
        detail: None,
    };
    secrets
        .insert_version(&sealed, &audit, &check.ciphertext)
        .await
        .unwrap();
    secrets
}

async fn discarding_a_failed_creation_keeps_the_secrets_and_tokens_that_predate_it(t: TestDb) {
    let secrets = store_secret(&t, "project:site", "DEPLOY_TOKEN").await;
    let tokens = SqlTokenStore::new(t.db.clone());
    let only_site = ApiToken::new(
        TokenName::parse("only-site").unwrap(),
        TokenScope::Build,
        vec![project("site")],
        truncate_millis(Utc::now()),
    )
    .unwrap();
    tokens
        .create_token(&only_site, &TokenHash([1; 32]))
        .await
        .unwrap();
    let site: Project = serde_json::from_value(serde_json::json!({
        "name": "site", "repo_url": "/data/repos/site.git", "created_repo": "/data/repos/site.git"
    }))
    .unwrap();
    t.store.create_project(&site).await.unwrap();
    // A build queued while the project was being set up.
    let mut keyed = task_with_callback("early");
    keyed.unique_key = Some("k1".into());
    let queued = t.store.create(keyed.clone()).await.unwrap().task;

    let discarded = t.store.discard_project(&site.name).await.unwrap();
    assert_eq!(discarded.project, site);
    assert_eq!(discarded.cancelled, [queued.id]);
    assert!(discarded.secrets_removed.is_empty(), "{discarded:?}");
    assert!(discarded.tokens_revoked.is_empty() && discarded.tokens_narrowed.is_empty());
    assert_eq!(
        t.store.get(queued.id).await.unwrap().status,
        TaskStatus::Cancelled
    );
    assert_eq!(
        t.store.get_project(&site.name).await.unwrap_err().code(),
        "not_found"
    );
    let left: Vec<String> = secrets
        .list(None)
        .await
        .unwrap()
        .iter()
        .map(|m| format!("{}/{}", m.scope, m.name))
        .collect();
    assert_eq!(left, ["project:site/DEPLOY_TOKEN"]);
    assert_eq!(
        tokens.token_by_hash(&TokenHash([1; 32])).await.unwrap(),
        Some(only_site)
    );
    assert_eq!(
        t.store
            .discard_project(&site.name)
            .await
            .unwrap_err()
            .code(),
        "not_found"
    );

    // Created again, the old key makes a new task.
    t.store.create_project(&site).await.unwrap();
    let again = t.store.create(keyed).await.unwrap();
    assert!(again.created && !again.key_reused);
    assert_ne!(again.task.id, queued.id);
}
