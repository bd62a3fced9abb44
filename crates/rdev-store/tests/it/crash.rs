//! Crash tests with real processes on PostgreSQL: `queue-crash-worker` processes burn down
//! 1,000 tasks while the test `kill -9`s some of them at random moments and restarts them
//! (and, in the second test, restarts its own private PostgreSQL cluster mid-run). Every
//! task must complete, and the effect written under the lease check (the callback outbox
//! row of the completing transaction) must exist exactly once per task.

use std::{
    net::TcpListener,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use rand::Rng;
use rdev_core::TaskStore;
use rdev_store::{Backend, Db};

use crate::common::{self, task_with_callback, TestDb};

const TASKS: usize = 1000;
const WORKERS: usize = 4;

/// A worker process in its own process group, killed with the group when dropped.
struct Worker {
    name: String,
    child: Child,
}

impl Worker {
    fn start(url: &str, name: &str) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_queue-crash-worker"))
            .args([url, name, "10", "1500", "3"])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start queue-crash-worker");
        Self {
            name: name.to_owned(),
            child,
        }
    }

    fn signal(&mut self, sig: nix::sys::signal::Signal) {
        let pgid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        let _ = nix::sys::signal::killpg(pgid, sig);
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal(nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// `TASKS` tasks with callbacks and attempts enough to survive every kill, spread over
/// 64 projects so that the workers hold many at once (a project runs one at a time).
async fn seed(store: &rdev_store::SqlStore, name: &str) {
    let mut batch = Vec::new();
    for i in 0..TASKS {
        let mut task = task_with_callback(&format!("{name} {i}"));
        task.project = common::project(&format!("{name}-{}", i % 64));
        task.max_attempts = 1000;
        batch.push(task);
    }
    store.create_many(batch).await.unwrap();
}

/// `(completed tasks, total executions)`; `None` while the database is unreachable.
async fn progress(url: &str) -> Option<(i64, i64)> {
    let Ok(Db::Postgres(p)) = Db::connect(url).await else {
        return None;
    };
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT (SELECT count(*) FROM tasks WHERE status = 'completed'), \
                (SELECT count(*) FROM task_events WHERE kind = 'executed')",
    )
    .fetch_one(&p)
    .await
    .ok();
    p.close().await;
    row
}

async fn wait_until_all_completed(url: &str, deadline: Duration) {
    let start = Instant::now();
    loop {
        if let Some((done, _)) = progress(url).await {
            if done == TASKS as i64 {
                return;
            }
        }
        assert!(
            start.elapsed() < deadline,
            "tasks still incomplete after {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Asserts no task lost, no effect duplicated, and that crashes really forced re-runs.
async fn assert_exactly_once(url: &str) {
    let Db::Postgres(p) = Db::connect(url).await.unwrap() else {
        unreachable!()
    };
    let (completed, other): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'completed'), \
                count(*) FILTER (WHERE status <> 'completed') FROM tasks",
    )
    .fetch_one(&p)
    .await
    .unwrap();
    assert_eq!(
        (completed, other),
        (TASKS as i64, 0),
        "every task completed, none lost"
    );
    let (with_effect, effects, max_per_task): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(DISTINCT task_id), count(*), COALESCE(max(n), 0) FROM \
         (SELECT task_id, count(*) OVER (PARTITION BY task_id) AS n FROM callback_outbox) e",
    )
    .fetch_one(&p)
    .await
    .unwrap();
    assert_eq!(max_per_task, 1, "an effect was written twice");
    assert_eq!((with_effect, effects), (TASKS as i64, TASKS as i64));
    let (reruns,): (i64,) = sqlx::query_as("SELECT count(*) FROM tasks WHERE attempt > 1")
        .fetch_one(&p)
        .await
        .unwrap();
    let executions = progress(url).await.unwrap().1;
    eprintln!("crash test: {reruns} tasks re-run after crashes, {executions} executions");
    assert!(
        reruns > 0,
        "no kill interrupted a leased task: the test proved nothing"
    );
    p.close().await;
}

/// Kills 1-2 random workers with SIGKILL every 150-500 ms while work remains, restarting
/// each at once.
async fn kill_and_restart(url: &str, workers: &mut [Worker], rounds: usize) {
    for _ in 0..rounds {
        let pause = rand::rng().random_range(150..500);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        if matches!(progress(url).await, Some((done, _)) if done >= TASKS as i64 * 9 / 10) {
            break;
        }
        let victims = rand::rng().random_range(1..=2);
        for _ in 0..victims {
            let i = rand::rng().random_range(0..workers.len());
            let name = workers[i].name.clone();
            workers[i].signal(nix::sys::signal::Signal::SIGKILL);
            workers[i] = Worker::start(url, &name);
        }
    }
}

fn stop_all(workers: &mut [Worker]) {
    for w in workers {
        w.signal(nix::sys::signal::Signal::SIGTERM);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_lose_no_task_and_duplicate_no_effect() {
    let t = TestDb::fresh(Backend::Postgres).await;
    seed(&t.store, "crash").await;
    let mut workers: Vec<Worker> = (0..WORKERS)
        .map(|i| Worker::start(&t.url, &format!("w{i}")))
        .collect();
    kill_and_restart(&t.url, &mut workers, 8).await;
    wait_until_all_completed(&t.url, Duration::from_secs(90)).await;
    stop_all(&mut workers);
    assert_exactly_once(&t.url).await;
}

/// `exe` run as the unprivileged `postgres` user when we are root (initdb refuses root).
fn as_owner(exe: &Path) -> Command {
    if nix::unistd::geteuid().is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(exe);
        c
    } else {
        Command::new(exe)
    }
}

/// A private PostgreSQL cluster in a temporary directory, stopped when dropped. Never
/// touches a server it did not start.
struct PrivateCluster {
    bindir: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivateCluster {
    fn bindir() -> PathBuf {
        if let Ok(d) = std::env::var("RDEV_PG_BINDIR") {
            return PathBuf::from(d);
        }
        let out = Command::new("pg_config")
            .arg("--bindir")
            .output()
            .expect("pg_config not found: install PostgreSQL or set RDEV_PG_BINDIR");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    }

    /// Runs a server binary as the cluster's owner.
    fn run(&self, tool: &str, args: &[&str]) {
        let out = as_owner(&self.bindir.join(tool))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect(tool);
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn start(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-w",
                "-t",
                "60",
                "-o",
                &opts,
                "start",
            ],
        );
    }

    fn create() -> Self {
        let bindir = Self::bindir();
        let dir = tempfile::tempdir().unwrap();
        if nix::unistd::geteuid().is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(ok.success(), "chown of the cluster directory failed");
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = Self { bindir, dir, port };
        let data = c.data();
        c.run(
            "initdb",
            &["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        );
        c.start();
        c
    }

    /// An immediate (crash-like) restart: no clean shutdown, recovery from WAL.
    fn crash_restart(&self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
        self.start();
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let data = self.data();
        let _ = as_owner(&self.bindir.join("pg_ctl"))
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_mid_run_loses_no_task_and_duplicates_no_effect() {
    let cluster = PrivateCluster::create();
    let url = cluster.url();
    let db = Db::connect(&url).await.unwrap();
    db.migrate().await.unwrap();
    let store = rdev_store::SqlStore::new(db.clone(), common::test_config())
        .await
        .unwrap();
    seed(&store, "restart").await;
    store.shutdown();
    db.close().await;

    let mut workers: Vec<Worker> = (0..WORKERS)
        .map(|i| Worker::start(&url, &format!("w{i}")))
        .collect();
    // Restart once about a quarter of the work is done, with leases in flight.
    let start = Instant::now();
    loop {
        if matches!(progress(&url).await, Some((done, _)) if done >= TASKS as i64 / 4) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "workers made no progress"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.crash_restart();
    kill_and_restart(&url, &mut workers, 3).await;
    wait_until_all_completed(&url, Duration::from_secs(90)).await;
    stop_all(&mut workers);
    assert_exactly_once(&url).await;
}
