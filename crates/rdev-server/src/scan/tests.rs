//! The scanner on hand-made changes (one test per encoding, per place, per setting) and
//! [`scan_push`] on real checkouts (limits, time).

use std::time::{Duration, Instant};

use base64::{
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
    Engine,
};
use rdev_core::{AllowPattern, TaskId};

use super::*;
use crate::git::{
    fixtures::{commit, World},
    GitEnv,
};

const SECRET: &str = "s3cr3t-Deploy/Value+8842";

fn scanner(allow: &[&str]) -> Scanner {
    let allow = allow
        .iter()
        .map(|p| AllowPattern::parse(p).unwrap())
        .collect();
    Scanner::new(
        [
            ("DEPLOY_TOKEN", SECRET),
            ("RDEV_API_TOKEN", "admin-token-value-1"),
            ("SHORT", "1234"),
        ],
        allow,
    )
}

fn added(path: &str, content: &[u8]) -> ChangedFile {
    ChangedFile {
        commit: "c0ffee".into(),
        path: path.as_bytes().to_vec(),
        added: true,
        symlink: false,
        new: content.into(),
        old: None,
    }
}

fn changed(path: &str, old: &[u8], new: &[u8]) -> ChangedFile {
    ChangedFile {
        added: false,
        old: Some(old.into()),
        ..added(path, new)
    }
}

fn scan(s: &Scanner, files: &[ChangedFile]) -> Vec<Finding> {
    let found = s.scan_files(files, Instant::now() + Duration::from_secs(60));
    assert!(!found.timed_out);
    found.findings
}

fn github_token() -> String {
    format!("ghp_{}", "aB3dE5gH7jK9mN1pQ2".repeat(2))
}

#[test]
fn a_known_value_is_found_in_every_encoding_with_its_name_and_never_its_value() {
    let s = scanner(&[]);
    let cases = [
        (SECRET.to_owned(), Encoding::Plain),
        (STANDARD.encode(SECRET), Encoding::Base64),
        (URL_SAFE_NO_PAD.encode(SECRET), Encoding::Base64),
        (
            STANDARD.encode(format!("user:{SECRET}\n")),
            Encoding::Base64Fragment,
        ),
        (
            "s3cr3t-Deploy%2FValue%2B8842".to_owned(),
            Encoding::PercentEncoded,
        ),
    ];
    for (form, encoding) in cases {
        let file = added(
            "config/t.txt",
            format!("# header\ntoken = {form}\n").as_bytes(),
        );
        let found = scan(&s, &[file]);
        assert_eq!(found.len(), 1, "{form}: {found:?}");
        let f = &found[0];
        assert_eq!(
            (f.rule.as_str(), f.path.as_str(), f.line, f.place),
            (KNOWN_VALUE, "config/t.txt", Some(2), Place::Line),
            "{form}"
        );
        assert_eq!(f.secret.as_deref(), Some("DEPLOY_TOKEN"));
        assert_eq!(f.encoding, Some(encoding), "{form}");
        let shown = format!("{f} {f:?} {}", serde_json::to_string(f).unwrap());
        assert!(!shown.contains(SECRET) && !shown.contains(&form), "{shown}");
    }
    // JSON escaping of a value that needs it.
    let quoted = Scanner::new([("QUOTED", "va\"lue\\with-escapes")], Vec::new());
    let json = serde_json::json!({"k": "va\"lue\\with-escapes"}).to_string();
    let found = scan(&quoted, &[added("a.json", json.as_bytes())]);
    assert_eq!(found[0].encoding, Some(Encoding::JsonEscaped), "{found:?}");
}

#[test]
fn short_known_values_are_not_looked_for() {
    let found = scan(&scanner(&[]), &[added("pin.txt", b"pin = 1234\n")]);
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn credential_formats_are_found_and_named_by_rule() {
    let key = format!(
        "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n",
        "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW".repeat(3)
    );
    let files = [
        added("keys/id_ed25519", key.as_bytes()),
        added(
            "src/gh.rs",
            format!("let t = \"{}\";\n", github_token()).as_bytes(),
        ),
    ];
    let found = scan(&scanner(&[]), &files);
    let got: Vec<(&str, &str, Option<u64>)> = found
        .iter()
        .map(|f| (f.path.as_str(), f.rule.as_str(), f.line))
        .collect();
    assert_eq!(
        got,
        vec![
            ("keys/id_ed25519", "private-key", Some(1)),
            ("src/gh.rs", "github-pat", Some(1)),
        ]
    );
    assert!(found
        .iter()
        .all(|f| f.secret.is_none() && !f.description.is_empty()));
}

#[test]
fn the_allow_list_covers_rule_findings_but_never_known_values() {
    let s = scanner(&["tests/fixtures/", "*.pem"]);
    let content = format!("{}\n{SECRET}\n", github_token());
    let files = [
        added("tests/fixtures/tokens.txt", content.as_bytes()),
        added("certs/fake.pem", content.as_bytes()),
        added("src/tokens.txt", content.as_bytes()),
    ];
    let found: Vec<(String, String)> = scan(&s, &files)
        .into_iter()
        .map(|f| (f.path, f.rule))
        .collect();
    assert_eq!(
        found,
        vec![
            ("tests/fixtures/tokens.txt".into(), KNOWN_VALUE.into()),
            ("certs/fake.pem".into(), KNOWN_VALUE.into()),
            ("src/tokens.txt".into(), "github-pat".into()),
            ("src/tokens.txt".into(), KNOWN_VALUE.into()),
        ]
    );
}

#[test]
fn a_known_value_that_also_looks_like_a_token_is_one_finding() {
    let token = github_token();
    let s = Scanner::new([("GITHUB_TOKEN", token.as_str())], Vec::new());
    let found = scan(&s, &[added("a.txt", token.as_bytes())]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].rule, KNOWN_VALUE);
}

#[test]
fn binary_files_symlink_targets_and_file_names_are_content_too() {
    let mut binary = vec![0u8, 1, 2, 0xff];
    binary.extend_from_slice(SECRET.as_bytes());
    binary.extend_from_slice(&[0, 9]);
    let link = ChangedFile {
        symlink: true,
        ..added("link", format!("/tmp/{}", github_token()).as_bytes())
    };
    let named = added(&format!("dump-{SECRET}.txt"), github_token().as_bytes());
    let found = scan(&scanner(&[]), &[added("app.bin", &binary), link, named]);
    let got: Vec<(String, &str, Place)> = found
        .iter()
        .map(|f| (f.path.clone(), f.rule.as_str(), f.place))
        .collect();
    assert_eq!(
        got,
        vec![
            ("app.bin".into(), KNOWN_VALUE, Place::Binary),
            ("link".into(), "github-pat", Place::Line),
            ("dump-[redacted].txt".into(), KNOWN_VALUE, Place::Name),
            ("dump-[redacted].txt".into(), "github-pat", Place::Line),
        ]
    );
    assert_eq!(
        found[0].to_string(),
        "app.bin (binary) known_value DEPLOY_TOKEN (plain)"
    );
    assert_eq!(
        found[2].to_string(),
        "dump-[redacted].txt (file name) known_value DEPLOY_TOKEN (plain)"
    );
    let everything = format!("{found:?}");
    assert!(!everything.contains(SECRET), "{everything}");
}

#[test]
fn in_a_changed_file_only_new_lines_count() {
    let old = format!("a = 1\nold = {SECRET}\nb = 2\n");
    // The value the remote already holds moved; a new line brings it again in base64.
    let new = format!(
        "a = 1\nb = 2\nold = {SECRET}\nnew = {}\n",
        STANDARD.encode(SECRET)
    );
    let found = scan(
        &scanner(&[]),
        &[changed("settings.ini", old.as_bytes(), new.as_bytes())],
    );
    let got: Vec<(Option<u64>, Option<Encoding>)> =
        found.iter().map(|f| (f.line, f.encoding)).collect();
    assert_eq!(got, vec![(Some(4), Some(Encoding::Base64))]);
    // A file that is not new does not have its name scanned again.
    let renamed_before = changed(&format!("{SECRET}.txt"), b"x\n", b"x\ny\n");
    assert!(scan(&scanner(&[]), &[renamed_before]).is_empty());
}

#[test]
fn a_key_block_whose_edges_did_not_change_is_still_found() {
    let block = |body: &str| {
        format!("-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----\n")
    };
    let old = block(&"A".repeat(70));
    let new = block(&"MIIEowIBAAKCAQEAx3sample".repeat(3));
    let found = scan(
        &scanner(&[]),
        &[changed("id_rsa", old.as_bytes(), new.as_bytes())],
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0].rule.as_str(), found[0].line),
        ("private-key", Some(2))
    );
}

#[test]
fn the_summary_names_the_first_findings_and_counts_the_rest() {
    let lines: String = (0..15).map(|i| format!("{i} {SECRET}\n")).collect();
    let found = scanner(&[]).scan_files(
        &[added("many.txt", lines.as_bytes())],
        Instant::now() + Duration::from_secs(60),
    );
    assert_eq!(found.total, 15);
    let report = ScanReport {
        findings: found.findings,
        total_findings: found.total,
        commits: 1,
        files: 1,
        bytes: lines.len() as u64,
        elapsed_ms: 0,
    };
    let summary = report.summary();
    assert!(
        summary.starts_with("many.txt:1 known_value DEPLOY_TOKEN (plain); many.txt:2 "),
        "{summary}"
    );
    assert!(summary.ends_with("; and 5 more"), "{summary}");
    assert!(!summary.contains(SECRET));
}

#[test]
fn a_passed_deadline_is_reported_not_clean() {
    let found = scanner(&[]).scan_files(&[added("a.txt", b"x")], Instant::now());
    assert!(found.timed_out);
}

async fn commit_file(ws: &Workspace, name: &str, content: &[u8]) {
    std::fs::write(ws.dir.join(name), content).unwrap();
    commit(ws, "change").await;
}

#[tokio::test]
async fn scan_push_reads_the_checkout_and_reports_limits_as_findings() {
    let world = World::new(true).await;
    let ws = world
        .checkout("site", TaskId::new(), &GitEnv::default())
        .await;
    let s = Arc::new(scanner(&[]));
    let clean = scan_push(&ws, Arc::clone(&s), &ScanLimits::default())
        .await
        .unwrap();
    assert!(clean.is_clean() && clean.commits == 0, "{clean:?}");

    commit_file(&ws, "index.html", b"<h1>hello</h1>\n").await;
    let clean = scan_push(&ws, Arc::clone(&s), &ScanLimits::default())
        .await
        .unwrap();
    assert!(clean.is_clean(), "{clean:?}");
    assert_eq!((clean.commits, clean.files), (1, 1));

    commit_file(&ws, "t.txt", format!("{SECRET}\n").as_bytes()).await;
    let found = scan_push(&ws, Arc::clone(&s), &ScanLimits::default())
        .await
        .unwrap();
    assert_eq!(found.commits, 2);
    assert_eq!(found.summary(), "t.txt:1 known_value DEPLOY_TOKEN (plain)");

    let mut small = ScanLimits::default();
    small.changes.max_bytes = 10;
    let limited = scan_push(&ws, Arc::clone(&s), &small).await.unwrap();
    assert_eq!(limited.findings[0].rule, SCAN_LIMIT);
    assert!(
        limited
            .summary()
            .starts_with("scan_limit: the changed files hold"),
        "{}",
        limited.summary()
    );

    let instant = ScanLimits {
        timeout: Duration::ZERO,
        ..ScanLimits::default()
    };
    let slow = scan_push(&ws, s, &instant).await.unwrap();
    assert!(!slow.is_clean());
    assert_eq!(slow.findings.last().unwrap().rule, SCAN_LIMIT);
    world.workspaces.remove(ws);
}

#[test]
fn rdev_looks_for_its_own_credentials_not_its_urls_and_switches() {
    use std::collections::BTreeMap;
    let mut config = Config {
        api_token: Some(SecretString::new("admin-token-1234")),
        ..Config::default()
    };
    config.agents.claude_code.env = BTreeMap::from([
        ("ANTHROPIC_API_KEY".to_owned(), SecretString::new("sk-key")),
        ("ANTHROPIC_AUTH_TOKEN".to_owned(), SecretString::new("tok")),
        (
            "ANTHROPIC_BASE_URL".to_owned(),
            SecretString::new("https://api.anthropic.com"),
        ),
        ("CLAUDE_CODE_MAX_RETRIES".to_owned(), SecretString::new("0")),
    ]);
    let names: Vec<String> = rdev_secrets(&config).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        names,
        [
            "RDEV_API_TOKEN",
            "agents.claude_code.env.ANTHROPIC_API_KEY",
            "agents.claude_code.env.ANTHROPIC_AUTH_TOKEN",
        ]
    );
}
