//! The credential store end to end below HTTP: real XChaCha20-Poly1305, real databases
//! (each test on PostgreSQL and on SQLite), real key files. Covers round trip, tampered and
//! swapped rows, a wrong key, rotation (complete, failed mid-way, and crashed between the
//! commit and the key-file rename), auditing, injection with redaction and the environment
//! fence, the reserved callback signing secret, and that no value shows in listings,
//! `Debug` output or errors.

use std::{fs, os::unix::fs::PermissionsExt, sync::Arc};

use rdev_core::{
    AuditAction, AuditFilter, ErrorCode, InjectionPlan, ProjectName, SecretName, SecretRepository,
    SecretScope, SecretString,
};
use rdev_server::{
    callbacks::{dispatcher::SigningKeys, keys::rotate_signing_secret},
    secrets::{KeySource, MasterKey, SecretError, SecretService},
};
use rdev_store::SqlSecretRepository;
use rdev_testkit::{db::exec, TestDb};

rdev_testkit::both_backends!(
    set_then_read_round_trips_and_lists_metadata_only,
    tampered_ciphertext_or_nonce_fails_to_decrypt,
    rows_moved_to_another_secret_version_or_scope_fail_to_decrypt,
    wrong_key_is_refused_before_anything_is_read_or_written,
    rotation_re_encrypts_everything_and_the_old_key_stops_working,
    rotation_failing_mid_way_leaves_every_secret_readable_with_the_old_key,
    crash_between_commit_and_key_file_rename_is_finished_at_next_start,
    another_process_rotating_the_shared_key_file_is_followed_and_stale_writers_refused,
    every_read_write_delete_and_rotation_is_audited_without_values,
    injection_resolves_project_then_global_and_redacts_every_form,
    injection_refuses_fenced_plans_before_reading_any_secret,
    the_signing_secret_is_written_only_by_rotation_and_never_listed_removed_or_injected,
    a_gateway_secret_is_never_injected_into_a_build_whatever_its_plan_names,
);

const VALUE: &str = "s3cr3t-VALUE/with+chars=";

fn scope(s: &str) -> SecretScope {
    SecretScope::parse(s).unwrap()
}
fn name(s: &str) -> SecretName {
    SecretName::parse(s).unwrap()
}

fn repo(t: &TestDb) -> Arc<dyn SecretRepository> {
    Arc::new(SqlSecretRepository::new(t.db.clone()))
}

/// A service whose key lives in a key file in the test's directory.
fn file_service(t: &TestDb) -> SecretService {
    let path = t.dir.path().join("master.key");
    let key = MasterKey::read_or_create_file(&path).unwrap();
    SecretService::new(repo(t), key, KeySource::File(path))
}

async fn set(s: &SecretService, sc: &str, n: &str, v: &str) {
    s.set(&scope(sc), &name(n), &SecretString::new(v), "test")
        .await
        .unwrap();
}

async fn read(s: &SecretService, sc: &str, n: &str) -> Result<(u32, String), SecretError> {
    s.read(&scope(sc), &name(n), "test", "check")
        .await
        .map(|(v, val)| (v, val.expose().to_owned()))
}

async fn set_then_read_round_trips_and_lists_metadata_only(t: TestDb) {
    let s = file_service(&t);
    set(&s, "global", "A", VALUE).await;
    set(&s, "global", "A", "second").await;
    set(&s, "project:site", "A", "project-only").await;
    assert_eq!(read(&s, "global", "A").await.unwrap(), (2, "second".into()));
    assert_eq!(
        read(&s, "project:site", "A").await.unwrap(),
        (1, "project-only".into())
    );
    let list = s.list(None).await.unwrap();
    assert_eq!(list.len(), 2);
    assert!(
        list.iter().all(|m| m.last_used_at.is_some()),
        "reads mark use"
    );
    let shown = format!("{list:?} {}", serde_json::to_string(&list).unwrap());
    for v in [VALUE, "second", "project-only"] {
        assert!(!shown.contains(v), "listing shows a value: {shown}");
    }
    let err = read(&s, "global", "MISSING").await.unwrap_err();
    assert_eq!(err.code(), "secret_not_found");
    for bad in ["", &"x".repeat(64 * 1024 + 1), "nul\0byte"] {
        let err = s
            .set(&scope("global"), &name("B"), &SecretString::new(bad), "t")
            .await
            .unwrap_err();
        assert_eq!(err.code(), "invalid_secret_value");
        if bad.len() > 1 {
            assert!(!err.to_string().contains(bad));
        }
    }
    assert!(!format!("{s:?}").contains(VALUE));
}

async fn tampered_ciphertext_or_nonce_fails_to_decrypt(t: TestDb) {
    let s = file_service(&t);
    set(&s, "global", "A", VALUE).await;
    let row = repo(&t)
        .get_latest(&scope("global"), &name("A"))
        .await
        .unwrap()
        .unwrap();
    let mut ct = row.ciphertext.clone();
    ct[3] ^= 0x40;
    exec(
        &t.db,
        "UPDATE secrets SET ciphertext = $1 WHERE name = 'A'",
        Some(ct),
    )
    .await;
    let err = read(&s, "global", "A").await.unwrap_err();
    assert_eq!(err.code(), "secret_undecryptable", "{err}");
    assert!(err.to_string().contains("global/A version 1"), "{err}");
    assert!(!err.to_string().contains(VALUE));

    let mut nonce = row.nonce.clone();
    nonce[0] ^= 1;
    exec(
        &t.db,
        "UPDATE secrets SET ciphertext = $1 WHERE name = 'A'",
        Some(row.ciphertext),
    )
    .await;
    assert_eq!(
        read(&s, "global", "A").await.unwrap().1,
        VALUE,
        "restored row opens"
    );
    exec(
        &t.db,
        "UPDATE secrets SET nonce = $1 WHERE name = 'A'",
        Some(nonce),
    )
    .await;
    assert_eq!(
        read(&s, "global", "A").await.unwrap_err().code(),
        "secret_undecryptable"
    );
}

async fn rows_moved_to_another_secret_version_or_scope_fail_to_decrypt(t: TestDb) {
    let s = file_service(&t);
    set(&s, "global", "A", "value-of-a").await;
    set(&s, "global", "B", "value-of-b").await;
    set(&s, "global", "B", "value-of-b2").await;
    set(&s, "project:site", "A", "value-of-site-a").await;
    let r = repo(&t);
    let a = r
        .get_latest(&scope("global"), &name("A"))
        .await
        .unwrap()
        .unwrap();
    // A's row copied over B version 2, over site's A, and renumbered as A version 2.
    for target in [
        "scope = 'global' AND name = 'B' AND version = 2",
        "scope = 'project:site' AND name = 'A'",
    ] {
        exec(
            &t.db,
            &format!("UPDATE secrets SET nonce = $1 WHERE {target}"),
            Some(a.nonce.clone()),
        )
        .await;
        exec(
            &t.db,
            &format!("UPDATE secrets SET ciphertext = $1 WHERE {target}"),
            Some(a.ciphertext.clone()),
        )
        .await;
    }
    assert_eq!(
        read(&s, "global", "B").await.unwrap_err().code(),
        "secret_undecryptable"
    );
    assert_eq!(
        read(&s, "project:site", "A").await.unwrap_err().code(),
        "secret_undecryptable"
    );
    exec(
        &t.db,
        "UPDATE secrets SET version = 2 WHERE scope = 'global' AND name = 'A'",
        None,
    )
    .await;
    assert_eq!(
        read(&s, "global", "A").await.unwrap_err().code(),
        "secret_undecryptable"
    );
}

async fn wrong_key_is_refused_before_anything_is_read_or_written(t: TestDb) {
    let s = file_service(&t);
    set(&s, "global", "A", VALUE).await;
    let wrong = SecretService::new(repo(&t), MasterKey::generate(), KeySource::Env);
    let err = wrong.verify_key().await.unwrap_err();
    assert_eq!(err.code(), "master_key_mismatch");
    assert!(err.to_string().contains("RDEV_MASTER_KEY"), "{err}");
    let err = wrong
        .set(&scope("global"), &name("NEW"), &SecretString::new("x"), "t")
        .await
        .unwrap_err();
    assert_eq!(err.code(), "master_key_mismatch");
    assert_eq!(
        read(&wrong, "global", "A").await.unwrap_err().code(),
        "master_key_mismatch"
    );
    assert_eq!(s.list(None).await.unwrap().len(), 1, "nothing was written");
    // The right key still works, from a fresh service reading the same key file.
    assert_eq!(
        read(&file_service(&t), "global", "A").await.unwrap().1,
        VALUE
    );
}

async fn rotation_re_encrypts_everything_and_the_old_key_stops_working(t: TestDb) {
    let s = file_service(&t);
    let path = t.dir.path().join("master.key");
    let old_key = MasterKey::read_file(&path).unwrap();
    for (sc, n, v) in [
        ("global", "A", "a1"),
        ("global", "A", "a2"),
        ("project:site", "B", "b"),
    ] {
        set(&s, sc, n, v).await;
    }
    let before = repo(&t).load_all().await.unwrap();
    let err = s.rotate_key(old_key.clone(), "t").await.unwrap_err();
    assert_eq!(err.code(), "master_key_unchanged");
    let report = s.rotate_key(MasterKey::generate(), "t").await.unwrap();
    assert_eq!(report.rotated, 3);
    let after = repo(&t).load_all().await.unwrap();
    for (b, a) in before.iter().zip(&after) {
        assert_ne!(b.ciphertext, a.ciphertext);
        assert_ne!(b.nonce, a.nonce);
    }
    // The same service, and one from the rewritten key file, read everything.
    assert_eq!(read(&s, "global", "A").await.unwrap(), (2, "a2".into()));
    let fresh = file_service(&t);
    assert_eq!(read(&fresh, "project:site", "B").await.unwrap().1, "b");
    assert_ne!(MasterKey::read_file(&path).unwrap(), old_key);
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(!MasterKey::staged_path(&path).exists());
    let stale = SecretService::new(repo(&t), old_key, KeySource::Env);
    assert_eq!(
        stale.verify_key().await.unwrap_err().code(),
        "master_key_mismatch"
    );
}

async fn rotation_failing_mid_way_leaves_every_secret_readable_with_the_old_key(t: TestDb) {
    let s = file_service(&t);
    let path = t.dir.path().join("master.key");
    let old_key = MasterKey::read_file(&path).unwrap();
    for n in ["A", "B", "C", "D"] {
        set(&s, "global", n, &format!("value-{n}")).await;
    }
    // The database aborts the transaction at the third row (A and B already updated).
    let trigger = match t.backend {
        rdev_store::Backend::Postgres => {
            exec(&t.db, "CREATE FUNCTION fail_rotation() RETURNS trigger AS $$ BEGIN \
                 RAISE EXCEPTION 'injected failure'; END $$ LANGUAGE plpgsql", None).await;
            "CREATE TRIGGER fail_rotation BEFORE UPDATE OF ciphertext ON secrets FOR EACH ROW \
             WHEN (NEW.name = 'C') EXECUTE FUNCTION fail_rotation()"
        }
        rdev_store::Backend::Sqlite => {
            "CREATE TRIGGER fail_rotation BEFORE UPDATE OF ciphertext ON secrets WHEN NEW.name = 'C' \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        }
    };
    exec(&t.db, trigger, None).await;
    let err = s.rotate_key(MasterKey::generate(), "t").await.unwrap_err();
    assert_eq!(err.code(), "store_unavailable", "{err}");
    // Key file unchanged, every secret opens with the old key, in this and a new process.
    assert_eq!(MasterKey::read_file(&path).unwrap(), old_key);
    for svc in [&s, &file_service(&t)] {
        for n in ["A", "B", "C", "D"] {
            assert_eq!(
                read(svc, "global", n).await.unwrap().1,
                format!("value-{n}")
            );
        }
    }
    let rotations = s.audit_log(&AuditFilter::default()).await.unwrap();
    assert!(rotations.iter().all(|e| e.action != AuditAction::Rotate));
    // Once the failure is gone the rotation goes through.
    let drop = match t.backend {
        rdev_store::Backend::Postgres => "DROP TRIGGER fail_rotation ON secrets",
        rdev_store::Backend::Sqlite => "DROP TRIGGER fail_rotation",
    };
    exec(&t.db, drop, None).await;
    assert_eq!(
        s.rotate_key(MasterKey::generate(), "t")
            .await
            .unwrap()
            .rotated,
        4
    );
}

async fn crash_between_commit_and_key_file_rename_is_finished_at_next_start(t: TestDb) {
    let path = t.dir.path().join("master.key");
    let s = file_service(&t);
    set(&s, "global", "A", VALUE).await;
    // What a crashed `rotate-key` leaves: the new key staged, the database re-encrypted
    // with it, the key file still holding the old key.
    let new_key = MasterKey::generate();
    new_key.stage_file(&path).unwrap();
    let env_svc = SecretService::new(
        repo(&t),
        MasterKey::read_file(&path).unwrap(),
        KeySource::Env,
    );
    env_svc.rotate_key(new_key.clone(), "t").await.unwrap();
    assert_ne!(MasterKey::read_file(&path).unwrap(), new_key);
    // The next start with the key file finishes the rename and reads everything.
    let restarted = file_service(&t);
    assert_eq!(read(&restarted, "global", "A").await.unwrap().1, VALUE);
    assert_eq!(MasterKey::read_file(&path).unwrap(), new_key);
    assert!(!MasterKey::staged_path(&path).exists());
}

async fn every_read_write_delete_and_rotation_is_audited_without_values(t: TestDb) {
    let s = file_service(&t);
    set(&s, "global", "A", VALUE).await;
    read(&s, "global", "A").await.unwrap();
    s.rotate_key(MasterKey::generate(), "rotator")
        .await
        .unwrap();
    s.remove(&scope("global"), &name("A"), "remover")
        .await
        .unwrap();
    let err = s
        .remove(&scope("global"), &name("A"), "remover")
        .await
        .unwrap_err();
    assert_eq!(err.code(), "secret_not_found");
    let log = s.audit_log(&AuditFilter::default()).await.unwrap();
    let got: Vec<(AuditAction, Option<u32>, &str)> = log
        .iter()
        .map(|e| (e.action, e.version, e.actor.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (AuditAction::Delete, None, "remover"),
            (AuditAction::Rotate, Some(1), "rotator"),
            (AuditAction::Read, Some(1), "test"),
            (AuditAction::Write, Some(1), "test"),
        ]
    );
    assert!(log
        .iter()
        .all(|e| e.scope == scope("global") && e.name == name("A")));
    let text = serde_json::to_string(&log).unwrap();
    assert!(!text.contains(VALUE), "{text}");
}

async fn injection_resolves_project_then_global_and_redacts_every_form(t: TestDb) {
    use base64::{engine::general_purpose::STANDARD, Engine};
    let s = file_service(&t);
    set(&s, "global", "API_KEY", "global-api-key-value").await;
    set(&s, "global", "SHARED", "shared-global").await;
    set(&s, "project:site", "SHARED", "shared-site-override").await;
    set(&s, "project:site", "GIT_TOKEN", "ghp_tokenvalue123").await;
    let project = ProjectName::parse("site").unwrap();
    let plan = InjectionPlan {
        env: vec![
            ("UPSTREAM_API_KEY".into(), name("API_KEY")),
            ("SHARED".into(), name("SHARED")),
        ],
        git_token: Some(name("GIT_TOKEN")),
    };
    let inj = s
        .inject(
            &project,
            &plan,
            "https://git.example.com/org/site.git",
            "task:1",
        )
        .await
        .unwrap();
    let env: Vec<(&str, &str)> = inj
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose()))
        .collect();
    assert_eq!(
        env,
        vec![
            ("UPSTREAM_API_KEY", "global-api-key-value"),
            ("SHARED", "shared-site-override")
        ]
    );
    assert!(inj.git_env.iter().any(|(k, _)| k == "GIT_CONFIG_COUNT"));
    let dbg = format!("{inj:?}");
    for v in [
        "global-api-key-value",
        "shared-site-override",
        "ghp_tokenvalue123",
    ] {
        assert!(!dbg.contains(v), "{dbg}");
    }
    let header = inj
        .git_env
        .iter()
        .find(|(k, _)| k == "GIT_CONFIG_VALUE_0")
        .unwrap()
        .1
        .clone();
    let event = serde_json::json!({
        "output": format!("env: UPSTREAM_API_KEY=global-api-key-value SHARED=shared-site-override \
            token ghp_tokenvalue123 b64 {} header {header}",
            STANDARD.encode("global-api-key-value")),
        "url": "https://x/?k=ghp%5Ftokenvalue123",
    });
    let text = inj.redactor.redacted_json(&event).to_string();
    for v in [
        "global-api-key-value",
        "shared-site-override",
        "ghp_tokenvalue123",
        "ghp_token",
        &STANDARD.encode("global-api-key-value"),
        &STANDARD.encode("x-access-token:ghp_tokenvalue123"),
    ] {
        assert!(!text.contains(v), "{v} survived in {text}");
    }
    // Reads for the build were audited under the task's name.
    let reads = s
        .audit_log(&AuditFilter::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == AuditAction::Read && e.actor == "task:1")
        .count();
    assert_eq!(reads, 3);
    let missing = InjectionPlan {
        env: vec![("X".into(), name("NOPE"))],
        git_token: None,
    };
    let err = s
        .inject(&project, &missing, "", "task:1")
        .await
        .unwrap_err();
    assert_eq!(err.code(), "secret_not_found");
    assert!(err.to_string().contains("project:site or global"), "{err}");
}

/// The worker's injection re-checks the plan, so one stored before a rule existed, or
/// written around the API, fails before a single secret is decrypted.
async fn injection_refuses_fenced_plans_before_reading_any_secret(t: TestDb) {
    let s = file_service(&t);
    set(&s, "global", "API_KEY", "global-api-key-value").await;
    let project = ProjectName::parse("site").unwrap();
    for (var, rule) in [
        ("GIT_CONFIG_COUNT", "GIT_*"),
        ("ANTHROPIC_BASE_URL", "ANTHROPIC_*"),
        ("LD_PRELOAD", "LD_*"),
        ("NODE_OPTIONS", "NODE_*"),
        ("HTTPS_PROXY", "*_PROXY"),
        ("PATH", "PATH"),
    ] {
        let plan = InjectionPlan {
            env: vec![
                ("DEPLOY_TOKEN".into(), name("API_KEY")),
                (var.into(), name("API_KEY")),
            ],
            git_token: None,
        };
        let err = s
            .inject(&project, &plan, "", "task:fenced")
            .await
            .unwrap_err();
        assert_eq!(err.code(), "reserved_env_name", "{var}: {err}");
        assert!(err.to_string().contains(rule), "{var}: {err}");
    }
    let reads = s
        .audit_log(&AuditFilter::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.actor == "task:fenced")
        .count();
    assert_eq!(reads, 0, "no secret was read for a refused plan");
}

async fn the_signing_secret_is_written_only_by_rotation_and_never_listed_removed_or_injected(
    t: TestDb,
) {
    let s = file_service(&t);
    let project = ProjectName::parse("site").unwrap();
    let site = SecretScope::Project(project.clone());
    let webhook = SecretName::webhook_secret();
    let secret = rotate_signing_secret(&s, &project, "api").await.unwrap();
    set(&s, "project:site", "DEPLOY_TOKEN", VALUE).await;

    for listed in [
        s.list(None).await.unwrap(),
        s.list(Some(&site)).await.unwrap(),
    ] {
        let names: Vec<&str> = listed.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["DEPLOY_TOKEN"]);
    }
    for scope in [site.clone(), SecretScope::Global] {
        let err = s
            .set(&scope, &webhook, &SecretString::new("whsec_mine"), "cli:x")
            .await
            .unwrap_err();
        assert_eq!(err.code(), "reserved_secret_name", "{err}");
        let err = s.remove(&scope, &webhook, "cli:x").await.unwrap_err();
        assert_eq!(err.code(), "reserved_secret_name", "{err}");
    }
    let kept = s
        .signing_secret(&project)
        .await
        .unwrap()
        .expect("still there");
    assert_eq!(kept.expose(), secret.expose());

    for plan in [
        InjectionPlan {
            env: vec![("HOOK_SECRET".into(), webhook.clone())],
            git_token: None,
        },
        InjectionPlan {
            env: vec![],
            git_token: Some(webhook.clone()),
        },
    ] {
        let err = s
            .inject(&project, &plan, "", "task:hook")
            .await
            .unwrap_err();
        assert_eq!(err.code(), "reserved_secret_name", "{plan:?}");
    }
    let log = s.audit_log(&AuditFilter::default()).await.unwrap();
    assert!(
        !log.iter().any(|e| e.actor == "task:hook"),
        "the signing secret was never read for a build"
    );
    assert!(
        !log.iter().any(|e| e.name == webhook && e.actor == "cli:x"),
        "refused calls wrote nothing"
    );
}

async fn another_process_rotating_the_shared_key_file_is_followed_and_stale_writers_refused(
    t: TestDb,
) {
    let path = t.dir.path().join("master.key");
    let server = file_service(&t);
    set(&server, "global", "A", VALUE).await;
    let old_key = MasterKey::read_file(&path).unwrap();
    let env_holder = SecretService::new(repo(&t), old_key, KeySource::Env);
    env_holder.verify_key().await.unwrap();

    // A second process (the CLI) rotates the shared key file.
    let cli = file_service(&t);
    cli.rotate_key(MasterKey::generate(), "cli").await.unwrap();

    // The long-running one follows the key file for reads and writes.
    assert_eq!(read(&server, "global", "A").await.unwrap().1, VALUE);
    set(&server, "global", "B", "written-after-rotation").await;
    assert_eq!(
        read(&cli, "global", "B").await.unwrap().1,
        "written-after-rotation"
    );

    // One that holds the old key in its environment cannot write a row nobody could open.
    let err = env_holder
        .set(
            &scope("global"),
            &name("C"),
            &SecretString::new("lost"),
            "t",
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "master_key_mismatch", "{err}");
    assert_eq!(
        read(&cli, "global", "C").await.unwrap_err().code(),
        "secret_not_found"
    );
    let err = read(&env_holder, "global", "A").await.unwrap_err();
    assert_eq!(err.code(), "master_key_mismatch", "{err}");
}

/// The `gateway` scope holds the model gateway's upstream keys: a project's plan names
/// secrets, and a name resolves in the project's scope and `global` only.
async fn a_gateway_secret_is_never_injected_into_a_build_whatever_its_plan_names(t: TestDb) {
    let s = file_service(&t);
    set(&s, "gateway", "ANTHROPIC_UPSTREAM", "sk-ant-upstream-only").await;
    let project = ProjectName::parse("site").unwrap();
    let plans = [
        InjectionPlan {
            env: vec![("LLM_KEY".into(), name("ANTHROPIC_UPSTREAM"))],
            git_token: None,
        },
        InjectionPlan {
            env: vec![],
            git_token: Some(name("ANTHROPIC_UPSTREAM")),
        },
    ];
    for plan in &plans {
        let err = s
            .inject(&project, plan, "https://git.example.com/site.git", "task:x")
            .await
            .unwrap_err();
        assert_eq!(err.code(), "secret_not_found", "{err}");
        assert!(err.to_string().contains("project:site or global"), "{err}");
    }
    // The same name in `global` is what a build gets: the gateway's value never.
    set(&s, "global", "ANTHROPIC_UPSTREAM", "global-value").await;
    let inj = s
        .inject(
            &project,
            &plans[0],
            "https://git.example.com/site.git",
            "task:x",
        )
        .await
        .unwrap();
    assert_eq!(inj.env[0].1.expose(), "global-value");
    assert!(inj.known_values().all(|(_, v)| v != "sk-ant-upstream-only"));
    let gateway_reads = s
        .audit_log(&AuditFilter {
            scope: Some(scope("gateway")),
            name: None,
            limit: 100,
        })
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == AuditAction::Read)
        .count();
    assert_eq!(gateway_reads, 0, "no build read the gateway's secret");
    // It is listed as any secret (metadata only) and read by the gateway alone.
    let listed = s.list(Some(&scope("gateway"))).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        read(&s, "gateway", "ANTHROPIC_UPSTREAM").await.unwrap().1,
        "sk-ant-upstream-only"
    );
}
