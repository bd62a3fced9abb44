//! What the model gateway costs a model call, against the baseline of calling the same
//! upstream directly (docs/gateway.md, "Overhead"). Two answer shapes, each measured on
//! four paths interleaved call by call so all see the same machine: direct, through a
//! plain TCP forwarder (`tcp_proxy`: what any user-space proxy costs at least, the floor
//! for the gateway's ratios), through the gateway's TCP listener, and the path a
//! sandboxed agent takes (a loopback port of the sandbox relay, `rdev-sandbox-relay` from
//! `target/` or `BENCH_RELAY`, handing each connection to the gateway's Unix socket;
//! skipped when not built).
//!
//! - latency: N small streaming calls one after another (default 500, `BENCH_CALLS`) to
//!   the scripted model, each read to its last byte; p50/p99 of each path and what the
//!   gateway adds. Goal: at most 2 ms added at p50.
//! - big streams: M answers of about 4 MiB each (default 20, `BENCH_STREAMS`; the request
//!   is as large, since the scripted model answers with the prompt's text), bytes per
//!   second of the response, and where the time went (until the response headers: the
//!   request's upload and the upstream's work; after them: the answer's download).
//!   Goal: at least 0.9x direct. Then the CPU time each path costs per such call (the
//!   same calls again, path after path).
//! - realistic stream: K calls (default 200, `BENCH_SSE_CALLS`) with a small request whose
//!   answer is many small SSE events (default 2000 `content_block_delta` events of about
//!   170 bytes, `BENCH_SSE_EVENTS`), each its own chunk, as a real model streams them but
//!   without its pauses (the worst case: per-event costs only); p50/p99 per call and
//!   throughput against direct. Then the same shape paced at one event per millisecond
//!   (20 calls of 200 events, `BENCH_SSE_PACED_CALLS`, `BENCH_SSE_PACED_EVENTS`), still
//!   faster than a real model streams.
//!
//! The gateway path includes everything a real call pays: the token lookup, the request
//! read (and streamed to the upstream as it is read) and its reservation, the upstream
//! request with the real key, and the response copied chunk by chunk while its events are
//! read for usage, and the call settled.
//!
//! Run: `cargo bench -p rdev-server --bench gateway`. Prints JSON lines.

use std::time::{Duration, Instant};

use axum::{body::Body, response::Response, routing::post, Router};
use bytes::Bytes;
use futures::StreamExt;
use rdev_core::SecretString;
use rdev_server::{
    gateway::{Gateway, GrantSpec},
    metrics::Metrics,
    Config,
};
use rdev_testkit::ScriptedModel;
use serde_json::{json, Value};
use tokio::runtime::Handle;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn body(text: &str) -> String {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "stream": true,
        "tools": [{"name": "Write", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": format!("@@reply {text}")}],
    })
    .to_string()
}

/// One call read to its last byte.
#[derive(Debug, Clone, Copy, Default)]
struct Timed {
    /// Seconds until the last byte.
    secs: f64,
    /// Seconds until the response headers.
    headers: f64,
    /// Response body bytes.
    bytes: usize,
}

async fn call(http: &reqwest::Client, base: &str, key: &str, path: &str, body: &str) -> Timed {
    let started = Instant::now();
    let response = http
        .post(format!("{base}{path}"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("the call is answered");
    assert_eq!(response.status(), 200);
    let headers = started.elapsed().as_secs_f64();
    let mut bytes = 0;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        bytes += chunk.expect("the stream is read").len();
    }
    Timed {
        secs: started.elapsed().as_secs_f64(),
        headers,
        bytes,
    }
}

/// The ways to one upstream: direct, through a plain TCP forwarder (the floor for any
/// proxy), through the gateway, through relay and gateway.
struct Paths {
    direct: String,
    tcp_proxy: String,
    gateway: String,
    relay: Option<String>,
    token: String,
}

impl Paths {
    /// (label, base URL, key) of each path, in the order calls are interleaved.
    fn each(&self) -> Vec<(&'static str, &str, &str)> {
        let mut out = vec![
            ("direct", self.direct.as_str(), "sk-bench"),
            ("tcp_proxy", self.tcp_proxy.as_str(), "sk-bench"),
            ("gateway", self.gateway.as_str(), self.token.as_str()),
        ];
        if let Some(r) = &self.relay {
            out.push(("relay", r.as_str(), self.token.as_str()));
        }
        out
    }
}

/// `rounds` interleaved calls of `body` to `path` (`/v1/messages` and its query) on every
/// path: each path's timings, in order. Every other round goes through the paths in the
/// reverse order, so of two paths each comes first as often: a gateway call right after another one
/// (relay after gateway) measured 0.77-0.86x direct for big streams where the first of the
/// two measured 0.82-0.99x, whichever of them came first.
async fn measure(
    http: &reqwest::Client,
    paths: &Paths,
    path: &str,
    body: &str,
    rounds: usize,
) -> Vec<(&'static str, Vec<Timed>)> {
    let each = paths.each();
    let mut out: Vec<(&'static str, Vec<Timed>)> =
        each.iter().map(|(l, _, _)| (*l, Vec::new())).collect();
    for round in 0..rounds {
        for k in 0..each.len() {
            let i = if round % 2 == 0 {
                k
            } else {
                each.len() - 1 - k
            };
            let (_, base, key) = each[i];
            out[i].1.push(call(http, base, key, path, body).await);
        }
    }
    out
}

/// p50 and p99 of the calls' durations, in milliseconds.
fn latency(calls: &[Timed]) -> (f64, f64) {
    let mut ms: Vec<f64> = calls.iter().map(|t| t.secs * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    (percentile(&ms, 0.5), percentile(&ms, 0.99))
}

/// MiB per second of response body over the calls' total time.
fn mib_s(calls: &[Timed]) -> f64 {
    let bytes: usize = calls.iter().map(|t| t.bytes).sum();
    let secs: f64 = calls.iter().map(|t| t.secs).sum();
    bytes as f64 / secs / (1024.0 * 1024.0)
}

/// Latency of each path and what it adds to direct, as one JSON line per path.
fn report_latency(bench: &str, measured: &[(&str, Vec<Timed>)]) {
    let (d50, d99) = latency(&measured[0].1);
    for (label, calls) in measured {
        let (p50, p99) = latency(calls);
        let mut line = json!({
            "bench": bench, "path": label, "calls": calls.len(),
            "baseline": "direct", "p50_ms": p50, "p99_ms": p99,
        });
        if *label != "direct" {
            line["added_ms"] = json!({"p50": p50 - d50, "p99": p99 - d99});
            line["goal"] = json!("added p50 <= 2 ms");
            line["met"] = json!(p50 - d50 <= 2.0);
        }
        println!("{line}");
    }
}

/// Throughput of each path against direct, and where the time went, one line per path.
/// The gateway's paths also get their ratio to the plain TCP forwarder's.
fn report_throughput(bench: &str, measured: &[(&str, Vec<Timed>)]) {
    let direct = mib_s(&measured[0].1);
    let floor = measured
        .iter()
        .find(|(label, _)| *label == "tcp_proxy")
        .map(|(_, calls)| mib_s(calls));
    for (label, calls) in measured {
        let n = calls.len().max(1) as f64;
        let headers: f64 = calls.iter().map(|t| t.headers).sum::<f64>() / n * 1000.0;
        let total: f64 = calls.iter().map(|t| t.secs).sum::<f64>() / n * 1000.0;
        let rate = mib_s(calls);
        let mut line: Value = json!({
            "bench": bench, "path": label, "calls": calls.len(),
            "bytes_per_call": calls.iter().map(|t| t.bytes).sum::<usize>() / calls.len().max(1),
            "mib_s": rate, "mean_ms": {"to_headers": headers, "body": total - headers, "total": total},
        });
        if *label != "direct" {
            line["ratio"] = json!(rate / direct);
        }
        if let ("gateway" | "relay", Some(floor)) = (*label, floor) {
            line["goal"] = json!("ratio >= 0.9");
            line["met"] = json!(rate / direct >= 0.9);
            line["ratio_to_tcp_proxy"] = json!(rate / floor);
        }
        println!("{line}");
    }
}

/// CPU time of this process's threads so far, in ms (the client, the upstream and the
/// gateway all run in it; the relay is its own process and copies no byte). `None`
/// without Linux's `/proc/self/task/*/schedstat`.
fn cpu_ms() -> Option<f64> {
    let ns: u64 = std::fs::read_dir("/proc/self/task")
        .ok()?
        .flatten()
        // A thread that ended meanwhile is left out.
        .filter_map(|t| {
            let stat = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            stat.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum();
    Some(ns as f64 / 1e6)
}

/// CPU time per call of `calls` calls of `body` on each path, one path after another (CPU
/// cannot be told apart per call when they are interleaved): on a machine whose cores are
/// busy, what a path adds in CPU is what it adds in time.
async fn report_cpu(bench: &str, http: &reqwest::Client, paths: &Paths, body: &str, calls: usize) {
    let mut direct = None;
    for (label, base, key) in paths.each() {
        let Some(before) = cpu_ms() else {
            return;
        };
        for _ in 0..calls {
            call(http, base, key, "/v1/messages", body).await;
        }
        let Some(after) = cpu_ms() else {
            return;
        };
        let per_call = (after - before) / calls.max(1) as f64;
        let mut line = json!({"bench": bench, "path": label, "calls": calls,
                              "baseline": "direct", "cpu_ms_per_call": per_call});
        match direct {
            None => direct = Some(per_call),
            Some(d) => line["added_cpu_ms_per_call"] = json!(per_call - d),
        }
        println!("{line}");
    }
}

/// An upstream streaming like a real model: `message_start`, `events` small text deltas
/// (the query's `events`) and the closing events, each its own chunk of the body, with
/// `pace_us` microseconds between deltas (default none).
async fn start_sse_model() -> String {
    let app = Router::new().route(
        "/v1/messages",
        post(|query: axum::extract::Query<SseQuery>| async move {
            let chunks = sse_chunks(query.events);
            let pace = Duration::from_micros(query.pace_us);
            // One event per write, as a model's events arrive one by one.
            let stream = futures::stream::iter(chunks).then(move |b| async move {
                if pace.is_zero() {
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(pace).await;
                }
                Ok::<_, std::convert::Infallible>(b)
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(stream))
                .unwrap()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use axum::serve::ListenerExt;
        let l = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(l, app).await.unwrap()
    });
    format!("http://{addr}")
}

#[derive(serde::Deserialize)]
struct SseQuery {
    events: usize,
    #[serde(default)]
    pace_us: u64,
}

/// The events of one streamed answer with `events` text deltas.
fn sse_chunks(events: usize) -> Vec<Bytes> {
    let text = "Here is a line of generated text, as a model streams it.";
    let event = |name: &str, data: Value| Bytes::from(format!("event: {name}\ndata: {data}\n\n"));
    let mut chunks = vec![event(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_bench", "type": "message",
            "role": "assistant", "model": "claude-sonnet-4-5", "content": [],
            "stop_reason": null, "usage": {"input_tokens": 20, "output_tokens": 1}}}),
    )];
    chunks.push(event(
        "content_block_start",
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ));
    for _ in 0..events {
        chunks.push(event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "text_delta", "text": text}}),
        ));
    }
    chunks.push(event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    chunks.push(event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
               "usage": {"output_tokens": events * 12}}),
    ));
    chunks.push(event("message_stop", json!({"type": "message_stop"})));
    chunks
}

/// A gateway whose one upstream is `base_url` (key `sk-bench`), its grant's token, and a
/// relay in front of its Unix socket when one is built.
/// The gateway runs on `proxies`, the threads the plain forwarder runs on too.
async fn gateway_to(
    proxies: &Handle,
    base_url: &str,
) -> (Gateway, rdev_server::gateway::Grant, Option<Relay>) {
    let mut config = Config::default();
    config
        .agents
        .claude_code
        .env
        .insert("ANTHROPIC_BASE_URL".into(), SecretString::new(base_url));
    config
        .agents
        .claude_code
        .env
        .insert("ANTHROPIC_API_KEY".into(), SecretString::new("sk-bench"));
    let settings = config.gateway_settings_from(|_| None).unwrap();
    let gateway = proxies
        .spawn(Gateway::start(settings, None, Metrics::default(), None))
        .await
        .unwrap()
        .unwrap();
    let grant = gateway.grant(GrantSpec::default());
    let relay = start_relay(&gateway);
    (gateway, grant, relay)
}

/// The least any proxy on this machine costs: a plain TCP forwarder to `upstream` (the
/// bytes copied both ways by `copy_bidirectional`, 256 KiB at a time; no HTTP, no
/// metering, no key swapped), in the same process as the gateway.
async fn start_tcp_proxy(upstream: String) -> String {
    let target = upstream
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                let Ok(mut upstream) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                for s in [&client, &upstream] {
                    s.set_nodelay(true).unwrap();
                }
                const BUF: usize = 256 * 1024;
                let _ =
                    tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, BUF, BUF)
                        .await;
            });
        }
    });
    format!("http://{addr}")
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // The client (this runtime), the model and the proxies each on threads of their own,
    // as each is its own process in use: all on one runtime, a proxy's tasks queued behind
    // the client's and the model's, which they wake, and ran one after another.
    let threads = |name: &str| {
        tokio::runtime::Builder::new_multi_thread()
            .thread_name(name)
            .enable_all()
            .build()
            .unwrap()
    };
    let (upstream, proxies) = (threads("upstream"), threads("proxies"));
    runtime.block_on(run(upstream.handle(), proxies.handle()));
}

async fn run(upstream: &Handle, proxies: &Handle) {
    let calls = env_usize("BENCH_CALLS", 500);
    let streams = env_usize("BENCH_STREAMS", 20);
    let sse_calls = env_usize("BENCH_SSE_CALLS", 200);
    let sse_events = env_usize("BENCH_SSE_EVENTS", 2000);
    let sse_paced_calls = env_usize("BENCH_SSE_PACED_CALLS", 20);
    let sse_paced_events = env_usize("BENCH_SSE_PACED_EVENTS", 200);
    let http = reqwest::Client::new();

    // The scripted model: small calls for latency, 4 MiB answers for throughput.
    let model = upstream
        .spawn(ScriptedModel::start())
        .await
        .unwrap()
        .unwrap();
    let (gateway, grant, relay) = gateway_to(proxies, &model.base_url()).await;
    let paths = Paths {
        direct: model.base_url(),
        tcp_proxy: proxies
            .spawn(start_tcp_proxy(model.base_url()))
            .await
            .unwrap(),
        gateway: gateway.url(),
        relay: relay.as_ref().map(|r| r.url.clone()),
        token: grant.token().expose().to_owned(),
    };
    // Warm-up: every path's connection is open before anything is timed.
    let small = body("ok");
    const MESSAGES: &str = "/v1/messages";
    measure(&http, &paths, MESSAGES, &small, 20).await;
    report_latency(
        "gateway_latency",
        &measure(&http, &paths, MESSAGES, &small, calls).await,
    );
    let big = body(&"x".repeat(4 * 1024 * 1024));
    measure(&http, &paths, MESSAGES, &big, 1).await;
    let measured = measure(&http, &paths, MESSAGES, &big, streams).await;
    let sizes: Vec<usize> = measured
        .iter()
        .map(|(_, c)| c.iter().map(|t| t.bytes).sum())
        .collect();
    assert!(
        sizes.windows(2).all(|w| w[0] == w[1]),
        "the same bytes each way"
    );
    report_throughput("gateway_stream_throughput", &measured);
    report_cpu("gateway_stream_cpu", &http, &paths, &big, streams).await;

    // The realistic shape: a small request, many small events.
    let sse = upstream.spawn(start_sse_model()).await.unwrap();
    let (sse_gateway, sse_grant, sse_relay) = gateway_to(proxies, &sse).await;
    let sse_paths = Paths {
        tcp_proxy: proxies.spawn(start_tcp_proxy(sse.clone())).await.unwrap(),
        direct: sse,
        gateway: sse_gateway.url(),
        relay: sse_relay.as_ref().map(|r| r.url.clone()),
        token: sse_grant.token().expose().to_owned(),
    };
    let request = json!({
        "model": "claude-sonnet-4-5", "max_tokens": 4096, "stream": true,
        "messages": [{"role": "user", "content": "Write the page."}],
    })
    .to_string();
    let flood = format!("{MESSAGES}?events={sse_events}");
    measure(&http, &sse_paths, &flood, &request, 5).await;
    let measured = measure(&http, &sse_paths, &flood, &request, sse_calls).await;
    report_latency("gateway_sse_latency", &measured);
    report_throughput("gateway_sse_throughput", &measured);
    // The same shape at a pace a fast model might keep (a real one is slower still).
    let paced = format!("{MESSAGES}?events={sse_paced_events}&pace_us=1000");
    let measured = measure(&http, &sse_paths, &paced, &request, sse_paced_calls).await;
    report_latency("gateway_sse_paced_latency", &measured);
    report_throughput("gateway_sse_paced_throughput", &measured);

    for (g, grant) in [(&gateway, &grant), (&sse_gateway, &sse_grant)] {
        assert!(grant.state().wait_settled(Duration::from_secs(10)).await);
        let metered: u64 = grant.state().by_model().values().map(|m| m.calls).sum();
        println!(
            "{}",
            json!({"bench": "gateway_metered_calls", "gateway": g.url(), "calls": metered})
        );
        g.stop();
    }
    drop((relay, sse_relay));
}

/// A sandbox relay run for the benchmark; stopped when dropped.
struct Relay {
    url: String,
    child: std::process::Child,
}

impl Drop for Relay {
    fn drop(&mut self) {
        // Its command is `cat` on the relay's stdin: closing that ends both.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// The sandbox relay on a free loopback port, carrying connections to the gateway's Unix
/// socket as it does inside a sandbox (here without one: the relay is what is measured).
/// `BENCH_RELAY` names the binary; else `target/{release,debug}/rdev-sandbox-relay`.
fn start_relay(gateway: &Gateway) -> Option<Relay> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    let bin = std::env::var_os("BENCH_RELAY")
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain(
            ["release", "debug"]
                .iter()
                .map(|p| root.join(p).join("rdev-sandbox-relay")),
        )
        .find(|p| p.is_file());
    let Some(bin) = bin else {
        println!(
            "{}",
            json!({"bench": "gateway_through_relay", "skipped": "build it: cargo build --release -p rdev-agents --bin rdev-sandbox-relay"})
        );
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new(&bin)
        .arg("--tcp")
        .arg(format!(
            "127.0.0.1:{port}={}",
            gateway.link().socket.display()
        ))
        .args(["--", "cat"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("the relay starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the relay listens");
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "{}",
        json!({"bench": "gateway_through_relay", "relay": bin.display().to_string()})
    );
    Some(Relay {
        url: format!("http://127.0.0.1:{port}"),
        child,
    })
}
