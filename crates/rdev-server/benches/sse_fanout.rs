//! Live views without per-viewer polling: N concurrent viewers of one running build's
//! event stream (`GET /tasks/{id}/events`, the stream the UI's build page shares) against
//! the baseline of 1 viewer, on PostgreSQL. A writer appends 20 events a second to the
//! running task the whole time; each viewer must receive every one.
//!
//! Measured over a window after every viewer is connected: the server's CPU time (its
//! runtime's threads only, read from `/proc/self/task/*/stat`; the viewers run on another
//! runtime) and the database's transactions per second (`pg_stat_database.xact_commit`,
//! less the writer's own inserts). Before the shared feed each viewer polled twice every
//! 200 ms on its own (10 queries/s per viewer), which is printed as the old model's figure.
//!
//! Run: `DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo bench -p rdev-server
//! --bench sse_fanout` (`BENCH_VIEWERS`, default 200; `BENCH_WINDOW_SECS`, default 10).
//! Prints one JSON line per case and one with the ratios.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use rdev_core::{ProjectName, TaskId, TaskStore, WorkQueue};
use rdev_server::{Application, Config};
use rdev_store::{SqlStore, StoreConfig};
use rdev_testkit::pg::PgDatabase;
use serde_json::json;

/// The server runtime's thread name prefix (its CPU is what is measured).
const SERVER_THREADS: &str = "rdev-srv";
/// Events the writer appends per second.
const EVENTS_PER_SEC: u64 = 20;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds used so far by this process's threads whose name starts with `prefix`.
fn thread_cpu(prefix: &str) -> f64 {
    let tick = 100.0; // USER_HZ on Linux
    let mut total = 0u64;
    for entry in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // Fields after the command (which is in parentheses): state is field 3; utime and
        // stime are fields 14 and 15.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        if fields.len() > 12 {
            total +=
                fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
        }
    }
    total as f64 / tick
}

async fn commits(db: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar::<_, i64>(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(db)
    .await
    .unwrap()
}

struct Case {
    viewers: usize,
    cpu_secs: f64,
    queries_per_sec: f64,
    events_written: u64,
    min_received: u64,
}

async fn measure(
    address: &str,
    task: TaskId,
    store: Arc<SqlStore>,
    pool: &sqlx::PgPool,
    viewers: usize,
    window: Duration,
) -> Case {
    let received: Vec<Arc<AtomicU64>> = (0..viewers).map(|_| Arc::default()).collect();
    let mut handles = Vec::new();
    let http = reqwest::Client::new();
    for counter in &received {
        let (http, counter) = (http.clone(), Arc::clone(counter));
        let url = format!("{address}/tasks/{task}/events");
        handles.push(tokio::spawn(async move {
            let resp = http.get(url).send().await.unwrap();
            let mut body = resp.bytes_stream();
            let mut carry = String::new();
            while let Some(Ok(chunk)) = body.next().await {
                carry.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(i) = carry.find("\n\n") {
                    if carry[..i].contains("event: bench") {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    carry.drain(..i + 2);
                }
            }
        }));
    }
    // Every viewer has its history replayed and has joined the feed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let start_counts: Vec<u64> = received.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let (cpu0, q0, t0) = (
        thread_cpu(SERVER_THREADS),
        commits(pool).await,
        Instant::now(),
    );
    let ticks = window.as_millis() as u64 * EVENTS_PER_SEC / 1000;
    for i in 0..ticks {
        store
            .append_event(task, "bench", json!({"i": i}))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1000 / EVENTS_PER_SEC)).await;
    }
    // Let the last events reach everyone (a poll interval and some).
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (cpu1, q1, secs) = (
        thread_cpu(SERVER_THREADS),
        commits(pool).await,
        t0.elapsed().as_secs_f64(),
    );
    let min_received = received
        .iter()
        .zip(start_counts)
        .map(|(c, s)| c.load(Ordering::Relaxed) - s)
        .min()
        .unwrap_or(0);
    for h in handles {
        h.abort();
    }
    // The writer's own inserts and the two stat reads are not the viewers' doing.
    let queries = (q1 - q0) as f64 - ticks as f64 - 2.0;
    Case {
        viewers,
        cpu_secs: cpu1 - cpu0,
        queries_per_sec: queries / secs,
        events_written: ticks,
        min_received,
    }
}

fn main() {
    let viewers = env_u64("BENCH_VIEWERS", 200) as usize;
    let window = Duration::from_secs(env_u64("BENCH_WINDOW_SECS", 10));
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(SERVER_THREADS)
        .enable_all()
        .build()
        .unwrap();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-client")
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pg = client_rt.block_on(PgDatabase::create());
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: pg.url.clone(),
        data_dir: dir.path().join("data"),
        worker_concurrency: 0,
        ..Config::default()
    };
    config.agents.enabled = vec!["claude-code".into()];
    config.agents.claude_code.env.insert(
        "ANTHROPIC_API_KEY".into(),
        rdev_core::SecretString::new("bench-key-not-real"),
    );
    let app = server_rt.block_on(Application::build(config)).unwrap();
    let address = format!("http://127.0.0.1:{}", app.port());
    let shutdown = app.shutdown_token();
    let server = server_rt.spawn(app.run_until_stopped());

    client_rt.block_on(async {
        let db = rdev_store::Db::connect(&pg.url).await.unwrap();
        let store = Arc::new(SqlStore::new(db, StoreConfig::default()).await.unwrap());
        let pool = sqlx::PgPool::connect(&pg.url).await.unwrap();
        let http = reqwest::Client::new();
        let r = http
            .post(format!("{address}/projects"))
            .json(&json!({"name": "fanout"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let task = store
            .create(rdev_core::NewTask::new(
                ProjectName::parse("fanout").unwrap(),
                rdev_core::BuildSpec::new("bench"),
            ))
            .await
            .unwrap()
            .task
            .id;
        // The bench holds the task's lease, so it is running and no worker touches it.
        let leases = store
            .claim("bench-worker", 1, Duration::from_secs(3600))
            .await
            .unwrap();
        assert_eq!(leases.len(), 1);

        let one = measure(&address, task, Arc::clone(&store), &pool, 1, window).await;
        let many = measure(&address, task, Arc::clone(&store), &pool, viewers, window).await;
        for c in [&one, &many] {
            assert_eq!(
                c.min_received, c.events_written,
                "every viewer receives every event ({} viewers)",
                c.viewers
            );
            println!(
                "{}",
                json!({"bench": "sse_fanout", "viewers": c.viewers, "window_secs": window.as_secs(),
                       "events_written": c.events_written, "min_events_received_per_viewer": c.min_received,
                       "server_cpu_secs": (c.cpu_secs * 100.0).round() / 100.0,
                       "server_cpu_percent": (c.cpu_secs / window.as_secs_f64() * 1000.0).round() / 10.0,
                       "db_queries_per_sec": (c.queries_per_sec * 10.0).round() / 10.0,
                       "old_per_viewer_polling_queries_per_sec": c.viewers * 10})
            );
        }
        println!(
            "{}",
            json!({"bench": "sse_fanout", "baseline": "1 viewer", "viewers": viewers,
                   "cpu_ratio": ((many.cpu_secs / one.cpu_secs.max(0.01)) * 100.0).round() / 100.0,
                   "db_queries_ratio": ((many.queries_per_sec / one.queries_per_sec.max(0.1)) * 100.0).round() / 100.0})
        );
    });
    shutdown.cancel();
    let _ = server_rt.block_on(server);
}
