//! Secret repository conformance: versions, listing, deletion, audit, the key check and
//! key rotation's all-or-nothing guarantees, run unchanged on PostgreSQL and SQLite (a
//! fresh database each). Sealed bytes are opaque here; the crypto is tested in rdev-server.

use chrono::{Duration, Utc};
use rdev_core::{
    queue::truncate_millis, AuditAction, AuditEntry, AuditFilter, ErrorCode, KeyCheck,
    RotatedSecret, Rotation, SealedSecret, SecretName, SecretRepository, SecretScope, StoreError,
};
use rdev_store::{Db, SqlSecretRepository};

use crate::common::TestDb;

rdev_testkit::both_backends!(
    versions_grow_and_the_latest_is_returned,
    listing_shows_latest_metadata_per_secret_and_filters_by_scope,
    duplicate_version_is_a_conflict_and_writes_no_audit_row,
    write_under_a_rotated_away_key_check_is_refused,
    delete_removes_every_version_and_is_audited,
    key_check_is_stored_once,
    audit_log_filters_newest_first,
    rotation_replaces_every_row_and_the_key_check_atomically,
    rotation_refuses_rows_changed_added_or_a_changed_key_check,
    rotation_failing_mid_way_leaves_every_row_unchanged,
);

fn scope(s: &str) -> SecretScope {
    SecretScope::parse(s).unwrap()
}
fn name(s: &str) -> SecretName {
    SecretName::parse(s).unwrap()
}

fn sealed(scope_: &str, name_: &str, version: u32, fill: u8) -> SealedSecret {
    SealedSecret {
        scope: scope(scope_),
        name: name(name_),
        version,
        nonce: vec![fill; 24],
        ciphertext: vec![fill; 40],
        created_at: truncate_millis(Utc::now()),
    }
}

fn audit(s: &SealedSecret, action: AuditAction) -> AuditEntry {
    AuditEntry {
        at: truncate_millis(Utc::now()),
        scope: s.scope.clone(),
        name: s.name.clone(),
        version: Some(s.version),
        action,
        actor: "test".into(),
        detail: None,
    }
}

fn check(fill: u8) -> KeyCheck {
    KeyCheck {
        nonce: vec![fill; 24],
        ciphertext: vec![fill; 40],
        created_at: truncate_millis(Utc::now()),
    }
}

/// The stored key check's ciphertext, storing `check(1)` first if there is none.
async fn current_check(repo: &SqlSecretRepository) -> Vec<u8> {
    if repo.key_check().await.unwrap().is_none() {
        repo.init_key_check(&check(1)).await.unwrap();
    }
    repo.key_check().await.unwrap().unwrap().ciphertext
}

async fn put(repo: &SqlSecretRepository, s: &SealedSecret) {
    let key_check = current_check(repo).await;
    repo.insert_version(s, &audit(s, AuditAction::Write), &key_check)
        .await
        .unwrap();
}

async fn versions_grow_and_the_latest_is_returned(t: TestDb) {
    let repo = SqlSecretRepository::new(t.db.clone());
    let (g, tok) = (scope("global"), name("TOKEN"));
    assert_eq!(repo.latest_version(&g, &tok).await.unwrap(), None);
    assert_eq!(repo.get_latest(&g, &tok).await.unwrap(), None);
    let v1 = sealed("global", "TOKEN", 1, 1);
    let v2 = sealed("global", "TOKEN", 2, 2);
    put(&repo, &v1).await;
    put(&repo, &v2).await;
    assert_eq!(repo.latest_version(&g, &tok).await.unwrap(), Some(2));
    assert_eq!(repo.get_latest(&g, &tok).await.unwrap(), Some(v2.clone()));
    // Same name in another scope is another secret.
    assert_eq!(
        repo.get_latest(&scope("project:site"), &tok).await.unwrap(),
        None
    );
    assert_eq!(repo.load_all().await.unwrap(), vec![v1, v2]);
}

async fn listing_shows_latest_metadata_per_secret_and_filters_by_scope(t: TestDb) {
    let repo = SqlSecretRepository::new(t.db.clone());
    put(&repo, &sealed("global", "A", 1, 1)).await;
    put(&repo, &sealed("global", "A", 2, 2)).await;
    put(&repo, &sealed("project:site", "B", 1, 3)).await;
    let all = repo.list(None).await.unwrap();
    let got: Vec<(String, String, u32)> = all
        .iter()
        .map(|m| (m.scope.to_string(), m.name.to_string(), m.version))
        .collect();
    assert_eq!(
        got,
        vec![
            ("global".into(), "A".into(), 2),
            ("project:site".into(), "B".into(), 1)
        ]
    );
    assert!(all.iter().all(|m| m.last_used_at.is_none()));
    let used_at = truncate_millis(Utc::now() + Duration::seconds(5));
    repo.mark_used(&scope("global"), &name("A"), 2, used_at)
        .await
        .unwrap();
    let site = repo.list(Some(&scope("project:site"))).await.unwrap();
    assert_eq!(site.len(), 1);
    assert_eq!(site[0].name, name("B"));
    let global = repo.list(Some(&scope("global"))).await.unwrap();
    assert_eq!(global[0].last_used_at, Some(used_at));
}

async fn duplicate_version_is_a_conflict_and_writes_no_audit_row(t: TestDb) {
    let repo = SqlSecretRepository::new(t.db.clone());
    let s = sealed("global", "A", 1, 1);
    put(&repo, &s).await;
    let key_check = current_check(&repo).await;
    let err = repo
        .insert_version(&s, &audit(&s, AuditAction::Write), &key_check)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "conflict", "{err}");
    assert_eq!(
        repo.audit_log(&AuditFilter::default()).await.unwrap().len(),
        1
    );
}

async fn write_under_a_rotated_away_key_check_is_refused(t: TestDb) {
    let repo = SqlSecretRepository::new(t.db.clone());
    let s = sealed("global", "A", 1, 1);
    let stale = vec![7u8; 40];
    assert_ne!(current_check(&repo).await, stale);
    let err = repo
        .insert_version(&s, &audit(&s, AuditAction::Write), &stale)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "conflict", "{err}");
    assert!(err.to_string().contains("rotated"), "{err}");
    assert_eq!(repo.load_all().await.unwrap(), vec![]);
    assert!(repo
        .audit_log(&AuditFilter::default())
        .await
        .unwrap()
        .is_empty());
}

async fn delete_removes_every_version_and_is_audited(t: TestDb) {
    let repo = SqlSecretRepository::new(t.db.clone());
    put(&repo, &sealed("global", "A", 1, 1)).await;
    put(&repo, &sealed("global", "A", 2, 2)).await;
    put(&repo, &sealed("global", "KEEP", 1, 3)).await;
    let mut del = audit(&sealed("global", "A", 0, 0), AuditAction::Delete);
    del.version = None;
    assert_eq!(
        repo.delete(&scope("global"), &name("A"), &del)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        repo.get_latest(&scope("global"), &name("A")).await.unwrap(),
        None
    );
    assert!(repo
        .get_latest(&scope("global"), &name("KEEP"))
        .await
        .unwrap()
        .is_some());
    let err = repo
        .delete(&scope("global"), &name("A"), &del)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    let log = repo.audit_log(&AuditFilter::default()).await.unwrap();
    assert_eq!(log[0].action, AuditAction::Delete);
    assert_eq!(log[0].version, None);
    assert_eq!(
        log.len(),
        4,
        "3 writes + 1 delete, none for the missing delete"
    );
}

async fn key_check_is_stored_once(t: TestDb) {
    let repo = SqlSecretRepository::new(t.db.clone());
    assert_eq!(repo.key_check().await.unwrap(), None);
    let first = check(1);
    assert!(repo.init_key_check(&first).await.unwrap());
    assert!(!repo.init_key_check(&check(2)).await.unwrap());
    assert_eq!(repo.key_check().await.unwrap(), Some(first));
}

async fn audit_log_filters_newest_first(t: TestDb) {
    let repo = SqlSecretRepository::new(t.db.clone());
    let a = sealed("global", "A", 1, 1);
    let b = sealed("project:site", "B", 1, 2);
    put(&repo, &a).await;
    put(&repo, &b).await;
    let mut read = audit(&a, AuditAction::Read);
    read.detail = Some("build: ok".into());
    read.actor = "task:123".into();
    repo.record_audit(&read).await.unwrap();
    let all = repo.audit_log(&AuditFilter::default()).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0], read);
    let only_a = repo
        .audit_log(&AuditFilter {
            scope: Some(scope("global")),
            name: Some(name("A")),
            limit: 0,
        })
        .await
        .unwrap();
    let actions: Vec<AuditAction> = only_a.iter().map(|e| e.action).collect();
    assert_eq!(actions, vec![AuditAction::Read, AuditAction::Write]);
    let one = repo
        .audit_log(&AuditFilter {
            limit: 1,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
}

/// A rotation of everything in `rows` to bytes filled with `fill`.
fn rotation(old: KeyCheck, rows: &[SealedSecret], fill: u8) -> Rotation {
    Rotation {
        old_check: old,
        new_check: check(fill),
        rows: rows
            .iter()
            .map(|r| RotatedSecret {
                scope: r.scope.clone(),
                name: r.name.clone(),
                version: r.version,
                old_ciphertext: r.ciphertext.clone(),
                nonce: vec![fill; 24],
                ciphertext: vec![fill; 40],
            })
            .collect(),
        audit: rows.iter().map(|r| audit(r, AuditAction::Rotate)).collect(),
    }
}

async fn seeded(t: &TestDb) -> (SqlSecretRepository, Vec<SealedSecret>) {
    let repo = SqlSecretRepository::new(t.db.clone());
    repo.init_key_check(&check(1)).await.unwrap();
    for s in [
        sealed("global", "A", 1, 1),
        sealed("global", "A", 2, 1),
        sealed("project:site", "B", 1, 1),
        sealed("project:site", "C", 1, 1),
    ] {
        put(&repo, &s).await;
    }
    let rows = repo.load_all().await.unwrap();
    (repo, rows)
}

async fn rotation_replaces_every_row_and_the_key_check_atomically(t: TestDb) {
    let (repo, rows) = seeded(&t).await;
    repo.replace_all(&rotation(check(1), &rows, 9))
        .await
        .unwrap();
    assert_eq!(
        repo.key_check().await.unwrap().unwrap().ciphertext,
        vec![9; 40]
    );
    for r in repo.load_all().await.unwrap() {
        assert_eq!((r.nonce, r.ciphertext), (vec![9; 24], vec![9; 40]));
    }
    let rotations = repo
        .audit_log(&AuditFilter::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == AuditAction::Rotate)
        .count();
    assert_eq!(rotations, rows.len());
}

async fn assert_untouched(repo: &SqlSecretRepository, rows: &[SealedSecret]) {
    assert_eq!(
        repo.key_check().await.unwrap().unwrap().ciphertext,
        vec![1; 40]
    );
    let now = repo.load_all().await.unwrap();
    for r in rows {
        let stored = now
            .iter()
            .find(|s| (&s.scope, &s.name, s.version) == (&r.scope, &r.name, r.version))
            .expect("row still there");
        assert_eq!(stored.ciphertext, r.ciphertext, "{r:?} changed");
    }
    let rotations = repo
        .audit_log(&AuditFilter::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == AuditAction::Rotate)
        .count();
    assert_eq!(rotations, 0, "a failed rotation left audit rows");
}

async fn rotation_refuses_rows_changed_added_or_a_changed_key_check(t: TestDb) {
    let (repo, rows) = seeded(&t).await;
    // A secret written after the rotation read everything.
    let late = sealed("global", "LATE", 1, 1);
    put(&repo, &late).await;
    let err = repo
        .replace_all(&rotation(check(1), &rows, 9))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "conflict", "{err}");
    assert_untouched(&repo, &rows).await;

    // A key check that is not the one the rotation started from.
    let mut all = rows.clone();
    all.push(late);
    let err = repo
        .replace_all(&rotation(check(7), &all, 9))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "conflict", "{err}");
    assert_untouched(&repo, &all).await;

    // A row whose bytes changed since they were read (the last one, so earlier rows were
    // already updated inside the transaction).
    let mut stale = all.clone();
    stale.last_mut().unwrap().ciphertext = vec![5; 40];
    let err = repo
        .replace_all(&rotation(check(1), &stale, 9))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "conflict", "{err}");
    assert_untouched(&repo, &all).await;
}

/// Makes the database itself fail when the rotation updates `project:site/C`.
async fn install_failing_trigger(db: &Db) {
    match db {
        Db::Postgres(p) => {
            sqlx::query(
                "CREATE FUNCTION fail_rotation() RETURNS trigger AS $$ BEGIN \
                 RAISE EXCEPTION 'injected failure'; END $$ LANGUAGE plpgsql",
            )
            .execute(p)
            .await
            .unwrap();
            sqlx::query(
                "CREATE TRIGGER fail_rotation BEFORE UPDATE OF ciphertext ON secrets FOR EACH ROW \
                 WHEN (NEW.name = 'C') EXECUTE FUNCTION fail_rotation()",
            )
            .execute(p)
            .await
            .unwrap();
        }
        Db::Sqlite(p) => {
            sqlx::query(
                "CREATE TRIGGER fail_rotation BEFORE UPDATE OF ciphertext ON secrets \
                 WHEN NEW.name = 'C' BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
            )
            .execute(p)
            .await
            .unwrap();
        }
    }
}

async fn rotation_failing_mid_way_leaves_every_row_unchanged(t: TestDb) {
    let (repo, rows) = seeded(&t).await;
    install_failing_trigger(&t.db).await;
    // Rows are updated in (scope, name, version) order: A1, A2, B1 succeed, C1 fails.
    let err = repo
        .replace_all(&rotation(check(1), &rows, 9))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "store_unavailable", "{err}");
    assert!(err.to_string().contains("injected failure"), "{err}");
    assert_untouched(&repo, &rows).await;
}
