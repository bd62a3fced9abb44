//! 20 concurrent real `claude` sessions through `ClaudeCodeAgent` against the scripted
//! model: every session writes a file, runs a bash command and answers. Reports the wall
//! time for all of them, per-session run time, and peak resident memory per CLI process
//! (`VmHWM` from `/proc`, sampled every 25 ms), plus the machine's peak memory in use above
//! the idle baseline. Baseline for the wall time: one session alone, run first.
//!
//! Run: `cargo bench -p rdev-agents --bench claude_concurrency` (needs
//! `scripts/setup-tools`). `RDEV_BENCH_SESSIONS` changes the session count.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use rdev_agents::claude_code::{ClaudeCodeAgent, ClaudeCodeConfig};
use rdev_core::{AgentRequest, AgentResult, AgentStatus, CodeAgent, SecretString};
use rdev_testkit::{claude_bin, ScriptedModel};

const PROMPT: &str = "@@write notes.md\n# Notes\nwritten by a concurrent session\n@@end\n\
                      @@bash wc -l notes.md && echo ok > ok.txt\n@@reply finished";

/// `kB` value of `field` in `/proc/<pid>/status`.
fn status_kb(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn meminfo_kb(field: &str) -> u64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    info.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn used_kb() -> u64 {
    meminfo_kb("MemTotal:").saturating_sub(meminfo_kb("MemAvailable:"))
}

/// Samples peak RSS of every `claude` process whose cwd is one of `dirs`, keyed by dir.
fn sample(dirs: &[PathBuf], peaks: &Mutex<HashMap<PathBuf, u64>>, peak_used: &Mutex<u64>) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(cwd) = std::fs::read_link(entry.path().join("cwd")) else {
            continue;
        };
        if !dirs.contains(&cwd) {
            continue;
        }
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if !comm.trim().starts_with("claude") {
            continue;
        }
        if let Some(hwm) = status_kb(pid, "VmHWM:") {
            let mut peaks = peaks.lock().unwrap();
            let e = peaks.entry(cwd).or_default();
            *e = (*e).max(hwm);
        }
    }
    let mut p = peak_used.lock().unwrap();
    *p = (*p).max(used_kb());
}

/// The first three fields of `/proc/loadavg` (other work on the machine skews the figures).
fn loadavg() -> String {
    let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

async fn one(agent: &ClaudeCodeAgent, dir: &Path) -> AgentResult {
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let req = AgentRequest::new(PROMPT, dir, Duration::from_secs(600));
    let result = agent.execute(req, tx).await.expect("execute");
    drain.await.unwrap();
    result
}

#[tokio::main]
async fn main() {
    let sessions: usize = std::env::var("RDEV_BENCH_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let model = ScriptedModel::start().await.expect("scripted model");
    let state = tempfile::tempdir().unwrap();
    let home = state.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let config = ClaudeCodeConfig {
        bin: Some(claude_bin()),
        config_root: Some(state.path().to_path_buf()),
        env: BTreeMap::from([
            (
                "ANTHROPIC_BASE_URL".to_owned(),
                SecretString::new(model.base_url()),
            ),
            (
                "ANTHROPIC_API_KEY".to_owned(),
                SecretString::new("bench-key"),
            ),
            // A clean HOME, as in a worker container: this machine's login profile runs
            // `pyenv rehash`, whose lock makes concurrent Bash tool shells wait on each
            // other and would measure the profile instead of the agents.
            (
                "HOME".to_owned(),
                SecretString::new(home.to_string_lossy().into_owned()),
            ),
        ]),
        availability_timeout: Duration::from_secs(300),
        ..ClaudeCodeConfig::default()
    };
    let agent = Arc::new(ClaudeCodeAgent::new(config).unwrap());

    let load_start = loadavg();
    let solo_dir = tempfile::tempdir().unwrap();
    let solo = one(&agent, solo_dir.path()).await;
    assert_eq!(solo.status, AgentStatus::Success, "{solo:?}");

    let dirs: Vec<tempfile::TempDir> = (0..sessions)
        .map(|_| tempfile::tempdir().unwrap())
        .collect();
    let paths: Vec<PathBuf> = dirs
        .iter()
        .map(|d| std::fs::canonicalize(d.path()).unwrap())
        .collect();
    let peaks = Arc::new(Mutex::new(HashMap::new()));
    let idle = used_kb();
    let peak_used = Arc::new(Mutex::new(idle));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = std::thread::spawn({
        let (paths, peaks, peak_used, done) = (
            paths.clone(),
            Arc::clone(&peaks),
            Arc::clone(&peak_used),
            Arc::clone(&done),
        );
        move || {
            while !done.load(Ordering::Relaxed) {
                sample(&paths, &peaks, &peak_used);
                std::thread::sleep(Duration::from_millis(25));
            }
        }
    });
    let start = Instant::now();
    let runs: Vec<_> = paths
        .iter()
        .cloned()
        .map(|dir| {
            let agent = Arc::clone(&agent);
            tokio::spawn(async move { one(&agent, &dir).await })
        })
        .collect();
    let mut results = Vec::new();
    for r in runs {
        results.push(r.await.unwrap());
    }
    let wall = start.elapsed();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();

    let ok = results
        .iter()
        .filter(|r| r.status == AgentStatus::Success)
        .count();
    // Printed before the asserts, so a failing bench still says how many runs succeeded.
    println!(
        "claude_concurrency: {sessions} sessions, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("  completed successfully: {ok}/{sessions}");
    for (r, dir) in results.iter().zip(&paths) {
        assert_eq!(r.status, AgentStatus::Success, "{r:?}");
        assert_eq!(std::fs::read_to_string(dir.join("ok.txt")).unwrap(), "ok\n");
    }
    let (dmin, dmed, dmax) = stats(results.iter().map(|r| r.duration.as_secs_f64()).collect());
    let peaks = peaks.lock().unwrap();
    let mb: Vec<f64> = peaks.values().map(|kb| *kb as f64 / 1024.0).collect();
    let (mmin, mmed, mmax) = stats(mb.clone());
    println!(
        "  load average at start / end: {load_start} / {}",
        loadavg()
    );
    println!(
        "  baseline, one session alone: {:.2}s",
        solo.duration.as_secs_f64()
    );
    println!(
        "  wall time for all {sessions}: {:.2}s ({:.2}x one session alone, {:.2}s per session amortised)",
        wall.as_secs_f64(),
        wall.as_secs_f64() / solo.duration.as_secs_f64(),
        wall.as_secs_f64() / sessions as f64
    );
    println!("  per-session run time: min {dmin:.2}s, median {dmed:.2}s, max {dmax:.2}s");
    println!(
        "  peak RSS per claude process ({} sampled): min {mmin:.0} MiB, median {mmed:.0} MiB, max {mmax:.0} MiB, sum {:.0} MiB",
        mb.len(),
        mb.iter().sum::<f64>()
    );
    let peak = *peak_used.lock().unwrap();
    let grown_mib = (peak - idle) as f64 / 1024.0;
    println!(
        "  machine memory in use: idle {:.0} MiB, peak {:.0} MiB (+{grown_mib:.0} MiB, {:.0} MiB per session)",
        idle as f64 / 1024.0,
        peak as f64 / 1024.0,
        grown_mib / sessions as f64
    );
}
