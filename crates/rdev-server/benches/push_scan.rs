//! Push protection's cost on a large push: a 10 MB change (`BENCH_SCAN_MB`) of source-like
//! text in 500 files, half of them new and half changed in place, scanned for 50 known
//! values (each in every encoding the redactor knows) and the rule set. Three figures, each
//! the median of 7 runs, with the ratio to the 100 ms goal of issue 19:
//!
//! - `scan`: the scan itself ([`Scanner::scan_files`]) on contents already in memory;
//! - `read`: reading the commit's files from git alone
//!   ([`rdev_server::git::Workspace::unpushed_changes`]);
//! - `scan_push`: what a build pays before its push, both together ([`scan_push`]).
//!
//! One known value and one credential are planted, so the scan cannot stop early and its
//! answer is checked. Run: `cargo bench -p rdev-server --bench push_scan`. Prints JSON lines.

use std::{
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use rdev_core::{ProjectName, TaskId};
use rdev_server::{
    git::{Author, ChangedFile, GitEnv, GitWorkspaces, Unpushed},
    scan::{scan_push, ScanLimits, Scanner},
};
use serde_json::json;

const GOAL: Duration = Duration::from_millis(100);
const FILES: usize = 500;
const RUNS: usize = 7;

/// A small deterministic generator (xorshift), so every run scans the same bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn word(&mut self) -> String {
        const WORDS: &[&str] = &[
            "let",
            "value",
            "config",
            "render",
            "request",
            "response",
            "user",
            "token_count",
            "items",
            "map",
            "filter",
            "async",
            "await",
            "return",
            "self",
            "String",
            "Vec",
            "page",
            "header",
            "footer",
            "section",
            "price",
            "tier",
            "button",
            "class",
        ];
        WORDS[(self.next() % WORDS.len() as u64) as usize].to_owned()
    }

    /// A line of code-like text with an identifier-ish random part.
    fn line(&mut self) -> String {
        let n = 3 + self.next() % 8;
        let mut words: Vec<String> = (0..n).map(|_| self.word()).collect();
        words.push(format!("id_{:x}", self.next()));
        format!("    {};\n", words.join(" "))
    }
}

/// `FILES` files of about `total / FILES` bytes; every other one has a previous version
/// that differs in a tenth of its lines.
fn changes(total: usize) -> Vec<ChangedFile> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let per_file = total / FILES;
    (0..FILES)
        .map(|i| {
            let mut new = String::with_capacity(per_file + 100);
            let mut old = String::with_capacity(per_file + 100);
            while new.len() < per_file {
                let line = rng.line();
                // One line in ten differs from the previous version.
                let roll = rng.next() % 10;
                if roll == 0 {
                    old.push_str(&rng.line());
                } else {
                    old.push_str(&line);
                }
                new.push_str(&line);
            }
            if i == FILES / 2 {
                new.push_str("    let deploy = \"known-value-number-17-abcdefgh\";\n");
            }
            if i == FILES / 3 {
                new.push_str(&format!(
                    "    token = \"ghp_{}\";\n",
                    "aB3dE5gH7jK9".repeat(3)
                ));
            }
            let changed = i % 2 == 1;
            ChangedFile {
                commit: "bench".into(),
                path: format!("src/module_{i}/file_{i}.rs").into_bytes(),
                added: !changed,
                symlink: false,
                new: new.into_bytes().into(),
                old: changed.then(|| old.into_bytes().into()),
            }
        })
        .collect()
}

fn known() -> Vec<(String, String)> {
    (0..50)
        .map(|i| {
            (
                format!("SECRET_{i}"),
                format!("known-value-number-{i}-abcdefgh"),
            )
        })
        .collect()
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn report(name: &str, bytes: usize, d: Duration, findings: usize) {
    println!(
        "{}",
        json!({
            "bench": name,
            "bytes": bytes,
            "known_values": 50,
            "median_ms": (d.as_secs_f64() * 1000.0 * 10.0).round() / 10.0,
            "goal_ms": GOAL.as_millis() as u64,
            "ratio_to_goal": (d.as_secs_f64() / GOAL.as_secs_f64() * 100.0).round() / 100.0,
            "findings": findings,
        })
    );
}

fn git(dir: &std::path::Path, args: &[&str]) {
    let ok = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=b", "-c", "user.email=b@b"])
        .args(args)
        .status()
        .unwrap()
        .success();
    assert!(ok, "git {args:?}");
}

#[tokio::main]
async fn main() {
    let mb: usize = std::env::var("BENCH_SCAN_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let total = mb << 20;
    let known = known();
    let pairs = || known.iter().map(|(k, v)| (k.as_str(), v.as_str()));

    // The scan alone.
    let files = changes(total);
    let bytes: usize = files.iter().map(|f| f.new.len()).sum();
    let mut times = Vec::new();
    let mut findings = 0;
    for _ in 0..RUNS {
        let started = Instant::now();
        let scanner = Scanner::new(pairs(), Vec::new());
        let found = scanner.scan_files(&files, Instant::now() + Duration::from_secs(60));
        times.push(started.elapsed());
        findings = found.total;
    }
    assert_eq!(findings, 2, "the planted value and token are found");
    report("scan", bytes, median(times), findings);

    // Read from git and scanned, as before a push: one commit on top of a seed commit
    // holding the previous versions.
    let dir = tempfile::tempdir().unwrap();
    let remote = dir.path().join("site.git");
    let seed = dir.path().join("seed");
    std::fs::create_dir(&seed).unwrap();
    git(&seed, &["init", "--quiet", "-b", "main"]);
    for f in files.iter().filter(|f| f.old.is_some()) {
        let path = seed.join(String::from_utf8_lossy(&f.path).as_ref());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, f.old.as_deref().unwrap()).unwrap();
    }
    git(&seed, &["add", "."]);
    git(&seed, &["commit", "-qm", "seed"]);
    Command::new("git")
        .args(["init", "--bare", "--quiet", "-b", "main"])
        .arg(&remote)
        .status()
        .unwrap();
    git(&seed, &["push", "-q", &remote.to_string_lossy(), "main"]);
    let workspaces = GitWorkspaces::new(dir.path().join("git"));
    let project = ProjectName::parse("bench").unwrap();
    let ws = workspaces
        .prepare(
            &project,
            &remote.to_string_lossy(),
            "main",
            TaskId::new(),
            &GitEnv::default(),
        )
        .await
        .unwrap();
    for f in &files {
        let path = ws.dir.join(String::from_utf8_lossy(&f.path).as_ref());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, &f.new).unwrap();
    }
    ws.commit_all("bench", None, &Author::default())
        .await
        .unwrap()
        .expect("a commit");
    let limits = ScanLimits::default();
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        let read = ws.unpushed_changes(&limits.changes).await.unwrap();
        times.push(started.elapsed());
        assert!(matches!(read, Unpushed::Changes { .. }));
    }
    report("read", bytes, median(times), 0);
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        let scanner = Arc::new(Scanner::new(pairs(), Vec::new()));
        let r = scan_push(&ws, scanner, &limits).await.unwrap();
        times.push(started.elapsed());
        findings = r.total_findings;
        assert_eq!(r.files, FILES);
    }
    assert_eq!(findings, 2, "the planted value and token are found");
    report("scan_push", bytes, median(times), findings);
    workspaces.remove(ws);
}
