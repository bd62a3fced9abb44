//! What the model gateway costs a model call, against the baseline of calling the same
//! scripted upstream directly (docs/gateway.md, "Overhead"):
//!
//! - latency: N calls one after another (default 500, `BENCH_CALLS`), each a small
//!   streaming Messages call read to its last byte, direct and through the gateway's TCP
//!   listener, interleaved so both see the same machine; p50/p99 of each and what the
//!   gateway adds. Goal: at most 2 ms added at p50.
//! - streaming throughput: M streamed answers of about 4 MiB each (default 20,
//!   `BENCH_STREAMS`), bytes per second of the response, direct and through the gateway.
//!   Goal: at least 0.9x direct.
//!
//! The gateway path includes everything a real call pays: the token lookup, the request
//! read and reservation, the upstream request with the real key, and the response copied
//! chunk by chunk while a side task parses its events for usage and settles it. A third
//! path is the one a sandboxed agent takes: a loopback port of the sandbox relay
//! (`rdev-sandbox-relay`, from `target/`; skipped when not built), the gateway's Unix
//! socket, the gateway.
//!
//! Run: `cargo bench -p rdev-server --bench gateway`. Prints JSON lines.

use std::time::{Duration, Instant};

use futures::StreamExt;
use rdev_core::SecretString;
use rdev_server::{
    gateway::{Gateway, GrantSpec},
    metrics::Metrics,
    Config,
};
use rdev_testkit::ScriptedModel;
use serde_json::json;

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

/// One call read to its last byte: (seconds, response bytes).
async fn call(http: &reqwest::Client, base: &str, key: &str, body: &str) -> (f64, usize) {
    let started = Instant::now();
    let response = http
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("the call is answered");
    assert_eq!(response.status(), 200);
    let mut bytes = 0;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        bytes += chunk.expect("the stream is read").len();
    }
    (started.elapsed().as_secs_f64(), bytes)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let calls = env_usize("BENCH_CALLS", 500);
    let streams = env_usize("BENCH_STREAMS", 20);
    let model = ScriptedModel::start().await.unwrap();
    let mut config = Config::default();
    config.agents.claude_code.env.insert(
        "ANTHROPIC_BASE_URL".into(),
        SecretString::new(model.base_url()),
    );
    config
        .agents
        .claude_code
        .env
        .insert("ANTHROPIC_API_KEY".into(), SecretString::new("sk-bench"));
    let settings = config.gateway_settings_from(|_| None).unwrap();
    let gateway = Gateway::start(settings, None, Metrics::default())
        .await
        .unwrap();
    let grant = gateway.grant(GrantSpec::default());
    let token = grant.token().expose().to_owned();
    let (direct, through) = (model.base_url(), gateway.url());
    let relay = start_relay(&gateway);
    let relayed = relay.as_ref().map(|(url, _)| url.clone());
    let http = reqwest::Client::new();

    // Latency: small calls, interleaved, after a warm-up of both paths' connections.
    let small = body("ok");
    for _ in 0..20 {
        call(&http, &direct, "sk-bench", &small).await;
        call(&http, &through, &token, &small).await;
    }
    if let Some(r) = &relayed {
        for _ in 0..20 {
            call(&http, r, &token, &small).await;
        }
    }
    let (mut d, mut g, mut r) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..calls {
        d.push(call(&http, &direct, "sk-bench", &small).await.0 * 1000.0);
        g.push(call(&http, &through, &token, &small).await.0 * 1000.0);
        if let Some(url) = &relayed {
            r.push(call(&http, url, &token, &small).await.0 * 1000.0);
        }
    }
    d.sort_by(f64::total_cmp);
    g.sort_by(f64::total_cmp);
    r.sort_by(f64::total_cmp);
    let (d50, d99, g50, g99) = (
        percentile(&d, 0.5),
        percentile(&d, 0.99),
        percentile(&g, 0.5),
        percentile(&g, 0.99),
    );
    println!(
        "{}",
        json!({
            "bench": "gateway_latency", "calls": calls, "baseline": "direct to the scripted model",
            "direct_ms": {"p50": d50, "p99": d99}, "gateway_ms": {"p50": g50, "p99": g99},
            "added_ms": {"p50": g50 - d50, "p99": g99 - d99},
            "goal": "added p50 <= 2 ms", "met": g50 - d50 <= 2.0,
        })
    );
    if !r.is_empty() {
        let (r50, r99) = (percentile(&r, 0.5), percentile(&r, 0.99));
        println!(
            "{}",
            json!({
                "bench": "gateway_latency_through_relay", "calls": calls,
                "baseline": "direct to the scripted model",
                "relay_ms": {"p50": r50, "p99": r99},
                "added_ms": {"p50": r50 - d50, "p99": r99 - d99},
                "goal": "added p50 <= 2 ms", "met": r50 - d50 <= 2.0,
            })
        );
    }

    // Throughput: large streamed answers (about 4 MiB of text each).
    let big = body(&"x".repeat(4 * 1024 * 1024));
    call(&http, &direct, "sk-bench", &big).await;
    call(&http, &through, &token, &big).await;
    let (mut d_secs, mut g_secs, mut d_bytes, mut g_bytes) = (0.0, 0.0, 0usize, 0usize);
    let (mut r_secs, mut r_bytes) = (0.0, 0usize);
    for _ in 0..streams {
        let (s, b) = call(&http, &direct, "sk-bench", &big).await;
        d_secs += s;
        d_bytes += b;
        let (s, b) = call(&http, &through, &token, &big).await;
        g_secs += s;
        g_bytes += b;
        if let Some(url) = &relayed {
            let (s, b) = call(&http, url, &token, &big).await;
            r_secs += s;
            r_bytes += b;
        }
    }
    assert_eq!(d_bytes, g_bytes, "the same bytes either way");
    let mib = |bytes: usize, secs: f64| bytes as f64 / secs / (1024.0 * 1024.0);
    let (dt, gt) = (mib(d_bytes, d_secs), mib(g_bytes, g_secs));
    println!(
        "{}",
        json!({
            "bench": "gateway_stream_throughput", "streams": streams,
            "bytes_per_stream": d_bytes / streams.max(1),
            "baseline": "direct to the scripted model",
            "direct_mib_s": dt, "gateway_mib_s": gt, "ratio": gt / dt,
            "goal": "ratio >= 0.9", "met": gt / dt >= 0.9,
        })
    );
    if r_bytes > 0 {
        let rt = mib(r_bytes, r_secs);
        println!(
            "{}",
            json!({
                "bench": "gateway_stream_throughput_through_relay", "streams": streams,
                "baseline": "direct to the scripted model",
                "direct_mib_s": dt, "relay_mib_s": rt, "ratio": rt / dt,
                "goal": "ratio >= 0.9", "met": rt / dt >= 0.9,
            })
        );
    }
    assert!(grant.state().wait_settled(Duration::from_secs(10)).await);
    let metered: u64 = grant.state().by_model().values().map(|m| m.calls).sum();
    println!(
        "{}",
        json!({"bench": "gateway_metered_calls", "calls": metered})
    );
    gateway.stop();
    if let Some((_, mut child)) = relay {
        // Its command is `cat` on the relay's stdin: closing that ends both.
        drop(child.stdin.take());
        let _ = child.wait();
    }
}

/// The sandbox relay on a free loopback port, carrying connections to the gateway's Unix
/// socket as it does inside a sandbox (here without one: the relay is what is measured).
fn start_relay(gateway: &Gateway) -> Option<(String, std::process::Child)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    let bin = ["release", "debug"]
        .iter()
        .map(|p| root.join(p).join("rdev-sandbox-relay"))
        .find(|p| p.is_file());
    let Some(bin) = bin else {
        println!(
            "{}",
            json!({"bench": "gateway_latency_through_relay", "skipped": "build it: cargo build -p rdev-agents --bin rdev-sandbox-relay"})
        );
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new(bin)
        .arg("--tcp")
        .arg(format!(
            "127.0.0.1:{port}={}",
            gateway.link().socket.display()
        ))
        .args(["--", "cat"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("the relay starts");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the relay listens");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((url, child))
}
