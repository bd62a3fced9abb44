//! `rdev bench queue`: enqueues N no-op jobs, burns them down with W workers claiming B at
//! a time, then measures idle pickup latency, and prints one JSON line. It needs a scratch
//! database: it refuses to start when the queue already holds work, since its workers
//! would run (complete) any queued task. Comparison with `pgbench` lives in
//! `scripts/bench-queue`; this module must not judge the figures.

use std::{
    collections::HashMap,
    process::ExitCode,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use rdev_core::{
    BuildResult, BuildSpec, NewTask, ProjectName, TaskFilter, TaskId, TaskStatus, TaskStore,
    WorkQueue,
};
use rdev_store::{Backend, Db, SqlStore, StoreConfig};
use tokio::sync::mpsc;

/// `rdev bench ...`
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    target: BenchTarget,
}

#[derive(Debug, Subcommand)]
enum BenchTarget {
    /// Queue throughput and pickup latency on a scratch database.
    Queue(QueueBenchArgs),
}

/// `rdev bench queue` options.
#[derive(Debug, Args)]
pub struct QueueBenchArgs {
    /// A scratch database (postgres://... or sqlite:PATH); the bench refuses a busy queue.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Jobs to enqueue and burn down.
    #[arg(long, default_value_t = 10_000)]
    jobs: usize,
    /// Concurrent workers.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Jobs per claim and per completion transaction (1 = unbatched).
    #[arg(long, default_value_t = 1)]
    batch: u32,
    /// Idle pickups to time after the burn-down.
    #[arg(long, default_value_t = 100)]
    pickup_samples: usize,
    /// Projects the jobs are spread over, round-robin (`rdev-bench-<n>`, no project rows,
    /// so each runs one build at a time: the default `max_parallel_builds`). Enough of
    /// them that the per-project limit is not what bounds the burn-down.
    #[arg(long, default_value_t = 1000)]
    projects: usize,
}

/// Runs the chosen benchmark.
pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.target {
        BenchTarget::Queue(q) => {
            let line = queue(&q).await?;
            println!("{line}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

const LEASE: Duration = Duration::from_secs(60);

async fn queue(a: &QueueBenchArgs) -> anyhow::Result<String> {
    if a.jobs == 0 || a.workers == 0 || a.batch == 0 || a.projects == 0 {
        bail!("--jobs, --workers, --batch and --projects must be at least 1");
    }
    let db = Db::connect(&a.database_url).await?;
    db.migrate().await?;
    let backend = db.backend();
    let store = SqlStore::new(db.clone(), StoreConfig::default()).await?;
    let busy = TaskFilter {
        status: Some(TaskStatus::Queued),
        limit: 1,
        ..Default::default()
    };
    if !store.list(&busy).await?.is_empty() {
        bail!("the queue already holds queued tasks; run the bench on a scratch database");
    }
    let projects = (0..a.projects)
        .map(|n| ProjectName::parse(&format!("rdev-bench-{n}")))
        .collect::<Result<Vec<_>, _>>()?;
    let new = |n: usize| NewTask::new(projects[n % projects.len()].clone(), BuildSpec::new("noop"));

    let started = Instant::now();
    let mut queued = 0;
    while queued < a.jobs {
        let n = (a.jobs - queued).min(500);
        store
            .create_many((queued..queued + n).map(new).collect())
            .await?;
        queued += n;
    }
    let enqueue_s = started.elapsed().as_secs_f64();

    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut handles = Vec::new();
    for w in 0..a.workers {
        let (store, done, total, batch) = (store.clone(), done.clone(), a.jobs, a.batch);
        handles.push(tokio::spawn(async move {
            burn(&store, &format!("bench-{w}"), batch, &done, total).await
        }));
    }
    for h in handles {
        h.await.context("worker panicked")??;
    }
    let burn_s = started.elapsed().as_secs_f64();

    let (p50, p99) = pickup(&store, &a.database_url, backend, a.pickup_samples, &new).await?;
    store.shutdown();
    db.close().await;
    // Written by hand to keep the documented field order (serde_json sorts keys).
    Ok(format!(
        "{{\"backend\":\"{}\",\"jobs\":{},\"workers\":{},\"batch\":{},\"projects\":{},\
         \"enqueue_per_s\":{:.1},\"jobs_per_s\":{:.1},\"pickup_p50_ms\":{:.2},\
         \"pickup_p99_ms\":{:.2}}}",
        backend.as_str(),
        a.jobs,
        a.workers,
        a.batch,
        a.projects,
        a.jobs as f64 / enqueue_s,
        a.jobs as f64 / burn_s,
        p50,
        p99
    ))
}

/// One worker of the burn-down: claim, complete (batched when `batch > 1`), until all
/// `total` jobs are done.
async fn burn(
    store: &SqlStore,
    name: &str,
    batch: u32,
    done: &AtomicUsize,
    total: usize,
) -> anyhow::Result<()> {
    let mut signal = store.subscribe();
    while done.load(Ordering::Relaxed) < total {
        let leases = store.claim(name, batch, LEASE).await?;
        if leases.is_empty() {
            store
                .wait_for_work(&mut signal, Duration::from_millis(20))
                .await;
            continue;
        }
        let n = leases.len();
        if batch == 1 {
            store
                .complete(&leases[0].key(), BuildResult::default())
                .await?;
        } else {
            let items: Vec<_> = leases
                .iter()
                .map(|l| (l.key(), BuildResult::default()))
                .collect();
            let report = store.complete_many(&items).await?;
            if !report.lost.is_empty() {
                bail!("{} leases lost during the bench", report.lost.len());
            }
        }
        done.fetch_add(n, Ordering::Relaxed);
    }
    Ok(())
}

/// Idle pickup latency in ms (p50, p99): one waiting worker, jobs enqueued one at a time
/// from a second connection pool (on PostgreSQL the wake-up then has to travel through
/// NOTIFY, as between nodes; SQLite is single-node, so its enqueue is in-process).
async fn pickup(
    store: &SqlStore,
    url: &str,
    backend: Backend,
    samples: usize,
    new: &dyn Fn(usize) -> NewTask,
) -> anyhow::Result<(f64, f64)> {
    if samples == 0 {
        return Ok((0.0, 0.0));
    }
    let producer = match backend {
        Backend::Postgres => SqlStore::new(Db::connect(url).await?, StoreConfig::default()).await?,
        Backend::Sqlite => store.clone(),
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<(TaskId, Instant)>();
    let worker = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut signal = store.subscribe();
            let mut got = 0;
            while got < samples {
                let leases = store.claim("bench-idle", 1, LEASE).await?;
                let at = Instant::now();
                for l in &leases {
                    tx.send((l.task.id, at)).ok();
                    store.complete(&l.key(), BuildResult::default()).await?;
                    got += 1;
                }
                if leases.is_empty() {
                    store
                        .wait_for_work(&mut signal, Duration::from_secs(5))
                        .await;
                }
            }
            anyhow::Ok(())
        })
    };
    let mut sent = HashMap::new();
    for n in 0..samples {
        // Let the worker go idle (claim finds nothing, then it waits) before each job.
        tokio::time::sleep(Duration::from_millis(15)).await;
        let t0 = Instant::now();
        let id = producer.create(new(n)).await?.task.id;
        sent.insert(id, t0);
    }
    worker.await.context("pickup worker panicked")??;
    let mut ms: Vec<f64> = Vec::with_capacity(samples);
    while let Ok((id, at)) = rx.try_recv() {
        if let Some(t0) = sent.get(&id) {
            ms.push(at.duration_since(*t0).as_secs_f64() * 1000.0);
        }
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| ms[((ms.len() as f64 * p).ceil() as usize).clamp(1, ms.len()) - 1];
    if backend == Backend::Postgres {
        producer.shutdown();
    }
    Ok((pct(0.50), pct(0.99)))
}
