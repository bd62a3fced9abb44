//! `rdev secret` as a user runs it: the real binary on a SQLite database in a temporary
//! directory, values on stdin or in a file, a key file created and rotated on disk.

use std::{
    fs,
    io::Write,
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Command, Output, Stdio},
};

const VALUE: &str = "cli-s3cret-Value-42";

fn rdev(dir: &Path, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
    let db = format!("sqlite:{}", dir.join("rdev.db").display());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rdev"));
    cmd.current_dir(dir)
        .arg("secret")
        .args(args)
        .args(["--database-url", &db])
        .env_remove("RDEV_MASTER_KEY")
        .env_remove("RDEV_MASTER_KEY_FILE")
        .env_remove("RDEV_CONFIG")
        .env_remove("RDEV_DATABASE_URL")
        .env_remove("RDEV_DATA_DIR")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("rdev runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn set_list_rotate_rm_and_audit_through_the_binary_without_printing_values() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = rdev(
        dir,
        &["set", "global", "GITHUB_TOKEN"],
        &format!("{VALUE}\n"),
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("stored global/GITHUB_TOKEN version 1"),
        "{}",
        text(&out)
    );
    let key_file = dir.join("data/master.key");
    assert_eq!(
        fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let value_file = dir.join("value.txt");
    fs::write(&value_file, "from-a-file-value").unwrap();
    let out = rdev(
        dir,
        &[
            "set",
            "project:site",
            "API_KEY",
            "--from-file",
            value_file.to_str().unwrap(),
        ],
        "",
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));

    let out = rdev(dir, &["list"], "", &[]);
    let listing = text(&out);
    assert!(out.status.success(), "{listing}");
    assert!(
        listing.contains("GITHUB_TOKEN") && listing.contains("API_KEY"),
        "{listing}"
    );
    assert!(
        !listing.contains(VALUE) && !listing.contains("from-a-file"),
        "{listing}"
    );
    let out = rdev(dir, &["list", "project:site", "--json"], "", &[]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);
    assert_eq!(json[0]["name"], "API_KEY");

    let old_key = fs::read_to_string(&key_file).unwrap();
    let out = rdev(dir, &["rotate-key"], "", &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("re-encrypted 2 secret versions"),
        "{}",
        text(&out)
    );
    let new_key = fs::read_to_string(&key_file).unwrap();
    assert_ne!(old_key, new_key);
    assert!(
        !text(&out).contains(new_key.trim()),
        "the new key was printed"
    );
    assert_eq!(
        fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The old key no longer opens the store; the error says so.
    let out = rdev(dir, &["list"], "", &[("RDEV_MASTER_KEY", old_key.trim())]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("not the key this database's secrets were encrypted with"),
        "{}",
        text(&out)
    );

    // With the key in the environment, rotation needs the new key on stdin.
    let out = rdev(
        dir,
        &["rotate-key"],
        "",
        &[("RDEV_MASTER_KEY", new_key.trim())],
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("--new-key-stdin"), "{}", text(&out));

    let out = rdev(dir, &["rm", "global", "GITHUB_TOKEN"], "", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let out = rdev(dir, &["rm", "global", "GITHUB_TOKEN"], "", &[]);
    assert!(!out.status.success());
    assert!(text(&out).contains("not found"), "{}", text(&out));

    let out = rdev(dir, &["audit", "global", "GITHUB_TOKEN"], "", &[]);
    let audit = text(&out);
    assert!(out.status.success(), "{audit}");
    let actions: Vec<&str> = audit
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(actions, vec!["delete", "rotate", "write"], "{audit}");
    assert!(!audit.contains(VALUE));

    fs::set_permissions(&key_file, fs::Permissions::from_mode(0o640)).unwrap();
    let out = rdev(dir, &["list"], "", &[]);
    assert!(!out.status.success());
    assert!(text(&out).contains("chmod 600"), "{}", text(&out));
}

#[test]
fn bad_input_fails_clearly_and_values_never_come_from_argv() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // A value given as an extra argument is refused by the parser, not stored.
    let out = rdev(dir, &["set", "global", "TOKEN", VALUE], "", &[]);
    assert!(!out.status.success());
    let out = rdev(dir, &["set", "global", "TOKEN"], "", &[]);
    assert!(!out.status.success());
    assert!(text(&out).contains("empty"), "{}", text(&out));
    let out = rdev(dir, &["set", "team:x", "TOKEN"], VALUE, &[]);
    assert!(!out.status.success());
    assert!(text(&out).contains("scope"), "{}", text(&out));
    let out = rdev(dir, &["list"], "", &[("RDEV_MASTER_KEY", "too-short")]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("RDEV_MASTER_KEY is invalid"),
        "{}",
        text(&out)
    );
}

/// The model gateway's upstream keys live in the `gateway` scope: set, listed and removed
/// like any other, never printed.
#[test]
fn the_gateway_scope_holds_upstream_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = rdev(
        dir,
        &["set", "gateway", "ANTHROPIC_KEY"],
        "sk-ant-cli-upstream\n",
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("stored gateway/ANTHROPIC_KEY version 1"),
        "{}",
        text(&out)
    );
    let out = rdev(dir, &["list", "gateway", "--json"], "", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed[0]["scope"], "gateway", "{listed}");
    assert_eq!(listed[0]["name"], "ANTHROPIC_KEY", "{listed}");
    assert!(!text(&out).contains("sk-ant-cli-upstream"));
    let out = rdev(dir, &["rm", "gateway", "ANTHROPIC_KEY"], "", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let out = rdev(dir, &["set", "gateways", "X"], "v\n", &[]);
    assert!(!out.status.success());
    assert!(text(&out).contains("\"gateway\""), "{}", text(&out));
}
