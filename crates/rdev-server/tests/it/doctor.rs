//! `rdev doctor`'s checks, each failure provoked: a complete set-up passes and calls the
//! model endpoint and Woodpecker once; an endpoint refusing the key, a wrong Woodpecker
//! token, missing credentials, a missing CLI or bubblewrap, an unreachable database, pending
//! migrations, a data directory that is not one, a readable key file and an open API are
//! each reported with a fix; `--offline` calls nothing.

use std::{os::unix::fs::PermissionsExt, path::Path};

use rdev_core::SecretString;
use rdev_server::{
    config::WoodpeckerConfig,
    doctor::{self, Check, Options, Report, Status},
    Config,
};
use rdev_testkit::{claude_bin, claude_env, woodpecker::FakeWoodpecker, ScriptedModel};

const KEY: &str = "doctor-key-value-1234";
const WP_TOKEN: &str = "wp-token-5678";

/// A set-up where everything is in place: the real `claude` CLI, credentials for `model`, a
/// fresh SQLite file and data directory under `dir`, loopback only.
fn config(dir: &Path, model: &ScriptedModel) -> Config {
    let mut c = Config {
        database_url: format!("sqlite:{}", dir.join("rdev.db").display()),
        data_dir: dir.join("data"),
        ..Config::default()
    };
    c.agents.enabled = vec!["claude-code".into()];
    let cc = &mut c.agents.claude_code;
    cc.bin = Some(claude_bin());
    cc.inherit_env = vec!["PATH".into(), "HOME".into()];
    cc.env = claude_env(&model.base_url(), KEY);
    c
}

fn check<'a>(report: &'a Report, name: &str) -> &'a Check {
    report
        .checks
        .iter()
        .find(|c| c.check == name)
        .unwrap_or_else(|| panic!("no {name} check in:\n{}", report.render()))
}

fn assert_status(report: &Report, name: &str, status: Status) -> String {
    let c = check(report, name);
    assert_eq!(c.status, status, "{name}:\n{}", report.render());
    assert_eq!(c.fix.is_some(), status != Status::Ok, "{}", c.line());
    c.line()
}

#[tokio::test]
async fn a_complete_setup_passes_and_calls_the_endpoint_and_woodpecker_once() {
    let dir = tempfile::tempdir().unwrap();
    let model = ScriptedModel::start_with_api_key(KEY).await.unwrap();
    let wp = FakeWoodpecker::start(WP_TOKEN).await.unwrap();
    let mut c = config(dir.path(), &model);
    c.api_token = Some(SecretString::new("admin-token"));
    c.woodpecker = Some(WoodpeckerConfig {
        url: wp.url(),
        token: SecretString::new(WP_TOKEN),
        appear_timeout_secs: 1,
        pipeline_timeout_secs: 1,
        poll_ms: 10,
    });
    let report = doctor::run(&c, Options::default()).await;
    assert!(report.passed(), "{}", report.render());
    for name in [
        "git",
        "claude-code CLI",
        "sandbox",
        "claude-code credentials",
        "claude-code endpoint",
        "database",
        "data directory",
        "master key",
        "woodpecker",
        "api tokens",
    ] {
        assert_status(&report, name, Status::Ok);
    }
    assert!(
        check(&report, "claude-code CLI").detail.contains("pinned"),
        "{}",
        report.render()
    );
    let calls = model.requests();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].path, "/v1/messages/count_tokens");
    assert_eq!(calls[0].status, 200);
    let wp_calls = wp.requests();
    assert_eq!(wp_calls.len(), 1, "{wp_calls:?}");
    assert!(wp_calls[0].authorized && wp_calls[0].uri == "/api/user");
    // It changed nothing: no database file, data directory or key file was created.
    assert!(!dir.path().join("rdev.db").exists());
    assert!(!dir.path().join("data").exists());
    assert!(!report.render().contains(KEY));
}

#[tokio::test]
async fn an_endpoint_refusing_the_key_and_a_wrong_woodpecker_token_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = ScriptedModel::start_with_api_key("the-right-key")
        .await
        .unwrap();
    let wp = FakeWoodpecker::start(WP_TOKEN).await.unwrap();
    let mut c = config(dir.path(), &model);
    c.woodpecker = Some(WoodpeckerConfig {
        url: wp.url(),
        token: SecretString::new("not-the-token"),
        appear_timeout_secs: 1,
        pipeline_timeout_secs: 1,
        poll_ms: 10,
    });
    let report = doctor::run(&c, Options::default()).await;
    assert!(!report.passed());
    let line = assert_status(&report, "claude-code endpoint", Status::Error);
    assert!(
        line.contains("401") && line.contains("ANTHROPIC_API_KEY"),
        "{line}"
    );
    assert_status(&report, "claude-code credentials", Status::Ok);
    let line = assert_status(&report, "woodpecker", Status::Error);
    assert!(line.contains("refused the token"), "{line}");
    assert!(line.contains("RDEV_WOODPECKER__TOKEN"), "{line}");
    let text = report.render();
    assert!(
        !text.contains(KEY) && !text.contains("not-the-token"),
        "{text}"
    );

    // Offline, neither is called.
    let before = (model.requests().len(), wp.requests().len());
    let report = doctor::run(&c, Options { offline: true }).await;
    assert_eq!((model.requests().len(), wp.requests().len()), before);
    assert!(report
        .checks
        .iter()
        .all(|c| c.check != "claude-code endpoint"));
    assert!(report.passed(), "{}", report.render());
    assert!(report.render().contains("offline"));
}

#[tokio::test]
async fn missing_credentials_are_an_error_that_names_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let model = ScriptedModel::start().await.unwrap();
    let mut c = config(dir.path(), &model);
    c.agents.claude_code.env.remove("ANTHROPIC_API_KEY");
    let report = doctor::run(&c, Options::default()).await;
    assert!(!report.passed());
    let line = assert_status(&report, "claude-code credentials", Status::Error);
    assert!(
        line.contains("agent_not_configured")
            && line.contains("ANTHROPIC_BASE_URL is set")
            && line.contains("RDEV_AGENTS__CLAUDE_CODE__ENV__ANTHROPIC_API_KEY"),
        "{line}"
    );
    assert!(model.requests().is_empty(), "no call without a credential");
}

#[tokio::test]
async fn a_missing_cli_or_bubblewrap_is_an_error_and_no_sandbox_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let model = ScriptedModel::start().await.unwrap();
    let mut c = config(dir.path(), &model);
    c.agents.claude_code.bin = Some("/nonexistent/claude".into());
    c.agents.bwrap_bin = Some("/nonexistent/bwrap".into());
    let report = doctor::run(&c, Options { offline: true }).await;
    let line = assert_status(&report, "claude-code CLI", Status::Error);
    assert!(
        line.contains("/nonexistent/claude") && line.contains("setup-tools"),
        "{line}"
    );
    let line = assert_status(&report, "sandbox", Status::Error);
    assert!(
        line.contains("/nonexistent/bwrap") && line.contains("bubblewrap"),
        "{line}"
    );

    c.agents.sandbox = rdev_agents::sandbox::SandboxMode::None;
    let report = doctor::run(&c, Options { offline: true }).await;
    let line = assert_status(&report, "sandbox", Status::Warning);
    assert!(line.contains("unsandboxed"), "{line}");
}

#[tokio::test]
async fn an_unreachable_database_is_an_error_and_pending_migrations_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let model = ScriptedModel::start().await.unwrap();
    let mut c = config(dir.path(), &model);
    c.database_url = "postgres://rdev:hunter2@127.0.0.1:1/rdev".into();
    let report = doctor::run(&c, Options { offline: true }).await;
    let line = assert_status(&report, "database", Status::Error);
    assert!(
        line.contains("cannot open") && !line.contains("hunter2"),
        "{line}"
    );
    assert!(check(&report, "api tokens").detail.contains("not checked"));

    let file = dir.path().join("existing.db");
    c.database_url = format!("sqlite:{}", file.display());
    let db = rdev_store::Db::connect(&c.database_url).await.unwrap();
    let report = doctor::run(&c, Options { offline: true }).await;
    let line = assert_status(&report, "database", Status::Warning);
    assert!(
        line.contains("not applied") && line.contains("rdev migrate"),
        "{line}"
    );
    db.migrate().await.unwrap();
    let report = doctor::run(&c, Options { offline: true }).await;
    let line = assert_status(&report, "database", Status::Ok);
    assert!(line.contains("schema current"), "{line}");
    db.close().await;
}

#[tokio::test]
async fn a_data_dir_that_is_no_directory_and_a_readable_key_file_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = ScriptedModel::start().await.unwrap();
    let mut c = config(dir.path(), &model);
    std::fs::write(dir.path().join("a-file"), "x").unwrap();
    c.data_dir = dir.path().join("a-file");
    let report = doctor::run(&c, Options { offline: true }).await;
    let line = assert_status(&report, "data directory", Status::Error);
    assert!(
        line.contains("not a directory") && line.contains("RDEV_DATA_DIR"),
        "{line}"
    );

    // Not writable: only observable for a user that permissions bind (not root).
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    if std::fs::write(locked.join("probe"), "x").is_err() {
        c.data_dir = locked.clone();
        let report = doctor::run(&c, Options { offline: true }).await;
        let line = assert_status(&report, "data directory", Status::Error);
        assert!(line.contains("cannot write"), "{line}");
    }
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();

    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    c.data_dir = data.clone();
    let key = data.join("master.key");
    std::fs::write(&key, format!("{}\n", "A".repeat(43) + "=")).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let report = doctor::run(&c, Options { offline: true }).await;
    let line = assert_status(&report, "master key", Status::Error);
    assert!(
        line.contains("0644") && line.contains("chmod 600"),
        "{line}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let report = doctor::run(&c, Options { offline: true }).await;
    assert_status(&report, "master key", Status::Ok);
    assert_status(&report, "data directory", Status::Ok);
}

#[tokio::test]
async fn the_api_token_posture_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let model = ScriptedModel::start().await.unwrap();
    let mut c = config(dir.path(), &model);
    let report = doctor::run(&c, Options { offline: true }).await;
    let line = assert_status(&report, "api tokens", Status::Warning);
    assert!(line.contains("open to anyone on this machine"), "{line}");

    c.listen = "0.0.0.0:8080".parse().unwrap();
    let report = doctor::run(&c, Options { offline: true }).await;
    let line = assert_status(&report, "api tokens", Status::Error);
    assert!(
        line.contains("will not start") && line.contains("rdev token create"),
        "{line}"
    );

    c.allow_unauthenticated = true;
    let report = doctor::run(&c, Options { offline: true }).await;
    let line = assert_status(&report, "api tokens", Status::Warning);
    assert!(line.contains("open to the network"), "{line}");

    c.api_token = Some(SecretString::new("admin-token"));
    let report = doctor::run(&c, Options { offline: true }).await;
    assert_status(&report, "api tokens", Status::Ok);
}

/// The agents hold a token, not a key: with `[[gateway.upstreams]]` the credentials check
/// and the probe use the gateway's first upstream, whose key may be in the credential store
/// (checked by name, never read or probed).
#[tokio::test]
async fn the_gateways_upstream_key_is_what_is_checked_and_probed() {
    use rdev_core::{SecretName, SecretScope};
    use rdev_server::{config::UpstreamConfig, secrets::SecretService};

    let dir = tempfile::tempdir().unwrap();
    let model = ScriptedModel::start_with_api_key(KEY).await.unwrap();
    let mut c = config(dir.path(), &model);
    // The agents' own settings name another endpoint and a key the model refuses.
    c.agents.claude_code.env = claude_env("http://127.0.0.1:9", "not-the-key");
    let env = rdev_testkit::ProcessEnv::set("RDEV_TEST_DOCTOR_UPSTREAM_KEY", KEY).await;
    c.gateway.upstreams = vec![UpstreamConfig {
        name: "primary".into(),
        base_url: model.base_url(),
        api_key_env: Some("RDEV_TEST_DOCTOR_UPSTREAM_KEY".into()),
        api_key_secret: None,
        auth: Default::default(),
    }];
    let report = doctor::run(&c, Options::default()).await;
    let line = assert_status(&report, "claude-code credentials", Status::Ok);
    assert!(
        line.contains("RDEV_TEST_DOCTOR_UPSTREAM_KEY from gateway upstream primary"),
        "{line}"
    );
    assert_status(&report, "claude-code endpoint", Status::Ok);
    let calls = model.requests();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].status, 200, "probed with the upstream's key");
    assert!(report.checks.iter().all(|c| c.check != "gateway keys"));
    drop(env);

    // The key in the credential store: its secret must exist; it is not read or probed.
    c.gateway.upstreams[0].api_key_env = None;
    c.gateway.upstreams[0].api_key_secret = Some("PRIMARY_KEY".into());
    let db = rdev_server::services::open_database(&c.database_url)
        .await
        .unwrap();
    let report = doctor::run(&c, Options::default()).await;
    let line = assert_status(&report, "claude-code credentials", Status::Ok);
    assert!(line.contains("gateway/PRIMARY_KEY"), "{line}");
    let line = assert_status(&report, "gateway keys", Status::Error);
    assert!(
        line.contains("gateway/PRIMARY_KEY")
            && line.contains("rdev secret set gateway PRIMARY_KEY"),
        "{line}"
    );
    let secrets = SecretService::from_config(&c, db.clone()).unwrap();
    secrets
        .set(
            &SecretScope::Gateway,
            &SecretName::parse("PRIMARY_KEY").unwrap(),
            &SecretString::new(KEY),
            "test",
        )
        .await
        .unwrap();
    let report = doctor::run(&c, Options::default()).await;
    let line = assert_status(&report, "gateway keys", Status::Ok);
    assert!(line.contains("primary: gateway/PRIMARY_KEY v1"), "{line}");
    assert!(!report.render().contains(KEY), "{}", report.render());
    assert_eq!(model.requests().len(), 1, "a stored key is not probed");
    db.close().await;
}
