//! Throughput of the Claude Code stream-json parser against a named baseline.
//!
//! Input: a synthetic but realistic transcript (`system/init`, assistant text and tool_use
//! blocks, tool results from 2 KB to 4 MB of escaped source and logs, a final `result`),
//! about 95 MB. Measured: the production path (`LineReader` over a tokio `BufReader` +
//! `StreamParser::parse_line` to `AgentEvent`s) versus the baseline, `serde_json`
//! parsing the same bytes into `serde_json::Value`s with its stream deserializer (no line
//! splitting, no mapping). Prints MB/s for both and the ratio; best of 5 runs each.
//!
//! Run: `cargo bench -p rdev-agents --bench stream_json`.

use std::time::{Duration, Instant};

use rdev_agents::claude_code::{LineReader, StreamParser};
use serde_json::{json, Value};

/// A source-like text with quotes, backslashes, tabs and newlines that JSON must escape.
fn code_blob(bytes: usize, seed: usize) -> String {
    let lines = [
        "fn main() {\n",
        "    let s = \"hello \\\"world\\\"\";\n",
        "\tprintln!(\"{}\", s); // tabbed\n",
        "    if a < b && c > d { return Err(\"bad\".into()); }\n",
        "error[E0308]: mismatched types --> src/lib.rs:42:17\n",
        "    path = C:\\\\Users\\\\build\\\\target\n",
        "}\n",
        "npm WARN deprecated package@1.2.3: use something else ✓ ünïcödé\n",
    ];
    let mut out = String::with_capacity(bytes + 128);
    let mut i = seed;
    while out.len() < bytes {
        out.push_str(lines[i % lines.len()]);
        i = i.wrapping_mul(31).wrapping_add(7);
    }
    out
}

/// A transcript of `turns` tool round-trips, about 95 MB for 120 turns.
fn transcript(turns: usize) -> Vec<u8> {
    let mut lines: Vec<Value> = vec![json!({
        "type": "system", "subtype": "init", "cwd": "/work/checkout", "session_id": "0197a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
        "tools": ["Task", "Bash", "Glob", "Grep", "Read", "Edit", "Write", "WebFetch", "TodoWrite"],
        "mcp_servers": [], "model": "claude-sonnet-4-5", "permissionMode": "bypassPermissions", "apiKeySource": "ANTHROPIC_API_KEY"
    })];
    for t in 0..turns {
        let id = format!("toolu_{t:020}");
        let usage = json!({"input_tokens": 1200 + t, "output_tokens": 300, "cache_read_input_tokens": 9000});
        lines.push(json!({"type": "assistant", "session_id": "s", "parent_tool_use_id": null, "message": {
            "id": format!("msg_{t}"), "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": format!("Step {t}: I will now inspect and change the code.")}],
            "stop_reason": null, "usage": usage }}));
        let (name, input) = if t % 3 == 0 {
            (
                "Write",
                json!({"file_path": format!("/work/checkout/src/mod_{t}.rs"), "content": code_blob(8 * 1024, t)}),
            )
        } else {
            (
                "Bash",
                json!({"command": format!("cargo test -p crate_{t} 2>&1 | tail -200"), "description": "Run tests"}),
            )
        };
        lines.push(json!({"type": "assistant", "session_id": "s", "message": {
            "id": format!("msg_{t}"), "role": "assistant", "content": [{"type": "tool_use", "id": id, "name": name, "input": input}],
            "usage": usage }}));
        // Mostly small results, some large file reads and logs, a few huge ones.
        let size = match t % 10 {
            0 => 4 * 1024 * 1024,
            1 | 2 => 1024 * 1024,
            3..=5 => 256 * 1024,
            _ => 2 * 1024,
        };
        let content = if t % 2 == 0 {
            json!(code_blob(size, t))
        } else {
            json!([{"type": "text", "text": code_blob(size, t)}])
        };
        lines.push(json!({"type": "user", "session_id": "s", "message": {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": id, "content": content, "is_error": t % 17 == 0}]}}));
    }
    lines.push(
        json!({"type": "result", "subtype": "success", "is_error": false, "duration_ms": 123456,
        "duration_api_ms": 100000, "num_turns": turns, "result": "All done.", "session_id": "s",
        "total_cost_usd": 1.2345, "usage": {"input_tokens": 150000, "output_tokens": 40000}}),
    );
    let mut out = Vec::new();
    for l in lines {
        serde_json::to_writer(&mut out, &l).unwrap();
        out.push(b'\n');
    }
    out
}

/// The production path; returns the number of events (so nothing is optimised away).
fn parse_production(rt: &tokio::runtime::Runtime, bytes: &[u8]) -> usize {
    rt.block_on(async {
        let mut reader = LineReader::new(tokio::io::BufReader::with_capacity(256 * 1024, bytes));
        let mut parser = StreamParser::new();
        let mut events = Vec::new();
        let mut count = 0;
        while let Some(line) = reader.next_line().await.unwrap() {
            parser.parse_line(line, &mut events);
            count += events.len();
            events.clear();
        }
        assert!(parser.result().is_some());
        count
    })
}

/// The baseline: serde_json's stream deserializer into `Value`s.
fn parse_baseline(bytes: &[u8]) -> usize {
    serde_json::Deserializer::from_slice(bytes)
        .into_iter::<Value>()
        .map(|v| usize::from(v.unwrap().is_object()))
        .sum()
}

fn best_of<F: FnMut() -> usize>(runs: usize, mut f: F) -> Duration {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f());
            start.elapsed()
        })
        .min()
        .unwrap()
}

fn main() {
    let bytes = transcript(120);
    let mb = bytes.len() as f64 / 1e6;
    let longest = bytes
        .split(|b| *b == b'\n')
        .map(<[u8]>::len)
        .max()
        .unwrap_or(0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // Warm up both paths once (page faults, allocator).
    parse_production(&rt, &bytes);
    parse_baseline(&bytes);
    let ours = best_of(5, || parse_production(&rt, &bytes));
    let base = best_of(5, || parse_baseline(&bytes));
    let ours_mbs = mb / ours.as_secs_f64();
    let base_mbs = mb / base.as_secs_f64();
    println!(
        "stream_json: transcript {mb:.1} MB, {} lines, longest line {:.1} MB",
        bytes.iter().filter(|b| **b == b'\n').count(),
        longest as f64 / 1e6
    );
    println!(
        "  rdev StreamParser (LineReader + map to AgentEvent): {ours_mbs:8.1} MB/s ({ours:?})"
    );
    println!(
        "  baseline serde_json::Value stream deserializer:     {base_mbs:8.1} MB/s ({base:?})"
    );
    println!(
        "  ratio rdev/baseline: {:.2}x (goal >= 0.5x and >= 200 MB/s per core)",
        ours_mbs / base_mbs
    );
}
