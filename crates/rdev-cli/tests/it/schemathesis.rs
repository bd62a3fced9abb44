//! The API contract checked from outside: Schemathesis (pinned, installed into
//! `.tools/schemathesis` by `scripts/setup-schemathesis`) runs all its checks and phases,
//! stateful included, against a real `rdev serve` on SQLite and on PostgreSQL with an API
//! token, and any finding fails the test; without the token, every operation of the served
//! spec but the public ones (`security: []`) answers 401.
//!
//! Nothing the generated requests ask for may leave the machine, so rdev runs fenced:
//! - `RDEV_WORKER_CONCURRENCY=0`: no task is ever claimed, so no agent, model call, push
//!   or CI request happens (builds stay queued);
//! - callbacks are still delivered by this node's dispatcher (cancelling a queued task
//!   writes its callback row, and a public `callback_url` passes the SSRF guard), so every
//!   HTTP client in rdev gets `HTTP(S)_PROXY`/`ALL_PROXY` pointing at an outbound trap
//!   on loopback, which records the request line and answers 403; the test first proves
//!   the trap catches a callback before Schemathesis starts;
//! - git (a project created with a template and variables clones its `repo_url`) runs
//!   through a `git` on `PATH` that sets `GIT_ALLOW_PROTOCOL=file`: local repositories only;
//! - Schemathesis itself gets no proxy and `NO_PROXY` for loopback, and reaches only rdev.
//!
//! Runs are serialised (two at once would starve a 2-core machine) and reproducible: a
//! fixed [`SEED`], no example database (a run does not replay an earlier one's failures).
//! [`MAX_EXAMPLES`] bounds the fuzzing and stateful phases; the coverage phase is
//! deterministic and costs what the spec asks of it (patterns with lookarounds are the
//! expensive part: Hypothesis can only meet them by filtering). A run that exceeds
//! [`RUN_LIMIT`] is stopped and fails. Reports (JUnit and Schemathesis' JSON, token
//! redacted) go to `target/schemathesis/<backend>/`.

mod fence;
mod state_dependent;

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
    time::{Duration, Instant},
};

use rdev_testkit::{clis::schemathesis_bin, workspace_root};
use serde_json::{json, Value};

use self::fence::{call, client, seed_and_check_the_fence, serve_fenced, Backend, Fenced, TOKEN};

/// Test cases per operation and phase (`st run -n`).
const MAX_EXAMPLES: u32 = 50;
/// Fixed, so a run can be reproduced (`st run --seed`).
const SEED: u32 = 20;
/// Longest a Schemathesis run may take before it is stopped and the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(300);
/// One Schemathesis run at a time.
static RUNS: Mutex<()> = Mutex::new(());

/// Where this run's reports go: `<target>/schemathesis/<backend>`, emptied first.
fn report_dir(backend: Backend) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let dir = target.join("schemathesis").join(backend.name());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Schemathesis' configuration for a run. Written even where it adds nothing, so no
/// `schemathesis.toml` above the working directory is picked up.
const ST_CONFIG: &str = "\
# Written by crates/rdev-cli/tests/it/schemathesis.rs for one run.
request-timeout = 10

# A live task's event stream never ends (no worker runs here): read it for 1 s.
[[operations]]
include-path = \"/tasks/{id}/events\"
request-timeout = 1
";

/// Runs Schemathesis against `run` and panics on any finding, with its output (token
/// redacted), the number of generated cases and the failures by check and operation.
fn schemathesis(st: &Path, run: &mut Fenced, backend: Backend) {
    let reports = report_dir(backend);
    let config = run.dir.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        format!("{ST_CONFIG}{}", state_dependent::ST_CONFIG),
    )
    .unwrap();
    let json_report = reports.join("report.json");
    let ndjson_report = reports.join("events.ndjson");
    let started = Instant::now();
    let (log, log_err) = (run.dir.path().join("st.out"), run.dir.path().join("st.err"));
    let mut child = Command::new(st)
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{}/openapi.json", run.server.url)])
        // rdev, whatever `servers` the spec names; and never a redirect elsewhere.
        .args(["--url", &run.server.url, "--max-redirects", "0"])
        .args(["--checks", "all"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--max-examples", &MAX_EXAMPLES.to_string()])
        .args(["--seed", &SEED.to_string()])
        .args(["--workers", "1"])
        .args(["--generation-database", "none"])
        .arg("--no-color")
        // Its sanitizer hides every field whose name mentions a token or secret
        // (`max_tokens`, `secrets`), so a printed request would not reproduce; the one
        // credential here is redacted below, from the output and the reports.
        .args(["--output-sanitize", "false"])
        .args(["--report", "junit,json,ndjson"])
        .arg("--report-dir")
        .arg(&reports)
        .arg("--report-junit-path")
        .arg(reports.join("junit.xml"))
        .arg("--report-json-path")
        .arg(&json_report)
        .arg("--report-ndjson-path")
        .arg(&ndjson_report)
        .current_dir(run.dir.path())
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .env_remove("SCHEMATHESIS_HOOKS")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(&log_err).unwrap())
        .spawn()
        .expect("Schemathesis starts");
    // A hung run (a request that never ends) fails the test instead of hanging the suite.
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let elapsed = started.elapsed();
    let output = format!(
        "{}{}",
        std::fs::read_to_string(&log).unwrap_or_default(),
        std::fs::read_to_string(&log_err).unwrap_or_default()
    )
    .replace(TOKEN, "[redacted]");
    let Some(status) = status else {
        panic!("Schemathesis ran longer than {RUN_LIMIT:?} and was stopped\n{output}");
    };
    for file in std::fs::read_dir(&reports).unwrap().flatten() {
        if let Ok(text) = std::fs::read_to_string(file.path()) {
            std::fs::write(file.path(), text.replace(TOKEN, "[redacted]")).unwrap();
        }
    }
    let report: Value = std::fs::read(&json_report)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let generated = &report["test_cases"]["generated"];
    let findings: Vec<String> = report["failures"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            format!(
                "{} {} ({}) on {}",
                f["code"], f["title"], f["count"], f["operations"]
            )
        })
        .collect();
    let (unexplained, explained) = state_dependent::unexplained_rejections(
        &std::fs::read_to_string(&ndjson_report).unwrap_or_default(),
    );
    // Not findings by themselves, but where a server bug would show first.
    let errors: Vec<String> = run
        .server
        .logs
        .lock()
        .unwrap()
        .iter()
        .filter(|v| v["level"] == "ERROR")
        .map(|v| format!("{} {}", v["message"], v["error"]))
        .collect();
    let mut caught = run.trap.seen();
    caught.sort();
    caught.dedup();
    let summary =
        format!(
        "schemathesis on {backend}: {generated} generated cases in {secs:.0} s, exit {code:?}, \
         {n} finding kinds{list}\nrdev logged {e} errors: {errors:?}\n\
         outbound requests caught on loopback: {caught:?}\n\
         422s explained by state: {explained}, not explained: {unexplained:?}\n\
         reports in {reports}",
        e = errors.len(),
        backend = backend.name(),
        secs = elapsed.as_secs_f64(),
        code = status.code(),
        n = findings.len(),
        list = findings.iter().map(|f| format!("\n  - {f}")).collect::<String>(),
        reports = reports.display(),
    );
    eprintln!("{summary}");
    assert!(
        matches!(run.server.child.try_wait(), Ok(None)),
        "rdev exited during the Schemathesis run\n{output}\n{summary}"
    );
    assert!(
        status.success()
            && findings.is_empty()
            && report["errors"] == json!([])
            && unexplained.is_empty(),
        "Schemathesis found problems\n{output}\n{summary}"
    );
}

#[test]
fn schemathesis_finds_nothing_against_serve_on_sqlite() {
    let st = schemathesis_bin();
    let _one = RUNS.lock().unwrap_or_else(|p| p.into_inner());
    let mut run = serve_fenced(Backend::Sqlite);
    seed_and_check_the_fence(&run);
    schemathesis(&st, &mut run, Backend::Sqlite);
}

#[test]
fn schemathesis_finds_nothing_against_serve_on_postgres() {
    let st = schemathesis_bin();
    let _one = RUNS.lock().unwrap_or_else(|p| p.into_inner());
    let mut run = serve_fenced(Backend::Postgres);
    seed_and_check_the_fence(&run);
    schemathesis(&st, &mut run, Backend::Postgres);
}

/// `v`, or what its `$ref` (`#/components/...`) points to.
fn resolve<'a>(spec: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str() {
        Some(r) => spec
            .pointer(r.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("unresolvable $ref {r}")),
        None => v,
    }
}

/// A value that looks valid for `schema`: its example, default or first enum value when it
/// has one, else a plain value of its type (objects with their required properties only).
fn sample(spec: &Value, schema: &Value, depth: u32) -> Value {
    let schema = resolve(spec, schema);
    if depth > 8 {
        return Value::Null;
    }
    for key in ["const", "example", "default"] {
        if let Some(v) = schema.get(key) {
            return v.clone();
        }
    }
    for key in ["examples", "enum", "oneOf", "anyOf", "allOf"] {
        if let Some(first) = schema[key].as_array().and_then(|a| a.first()) {
            return if key == "examples" || key == "enum" {
                first.clone()
            } else {
                sample(spec, first, depth + 1)
            };
        }
    }
    let ty = match &schema["type"] {
        Value::Array(types) => types.iter().find(|t| *t != "null").cloned(),
        t => Some(t.clone()),
    };
    match ty.as_ref().and_then(Value::as_str) {
        Some("object") => {
            let mut obj = serde_json::Map::new();
            for name in schema["required"].as_array().into_iter().flatten() {
                let name = name.as_str().unwrap_or_default();
                let prop = &schema["properties"][name];
                obj.insert(name.to_owned(), sample(spec, prop, depth + 1));
            }
            Value::Object(obj)
        }
        Some("array") => json!([]),
        Some("integer") | Some("number") => json!(1),
        Some("boolean") => json!(false),
        Some("null") => Value::Null,
        _ if schema["format"] == "uuid" => json!("01a2bcde-0000-7000-8000-000000000001"),
        _ => json!("demo"),
    }
}

/// The value a parameter gets in the URL or a header.
fn param_text(spec: &Value, param: &Value) -> String {
    match sample(spec, &param["schema"], 0) {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// Whether `op` needs no credential: its `security` (or the document's) is empty or
/// contains the empty requirement `{}`.
fn is_public(spec: &Value, op: &Value) -> bool {
    match op.get("security").or_else(|| spec.get("security")) {
        None => true,
        Some(reqs) => reqs
            .as_array()
            .is_none_or(|r| r.is_empty() || r.iter().any(|req| req == &json!({}))),
    }
}

/// Asks every operation of the served spec without a token: the public ones must not
/// answer 401 (or 403); every other one must answer 401 `unauthorized` with
/// `WWW-Authenticate: Bearer`. Schemathesis' `ignored_auth` check (in the runs above) also
/// repeats requests without credentials, but only for operations it reaches.
#[test]
fn without_a_token_every_operation_but_the_public_ones_answers_401() {
    let run = serve_fenced(Backend::Sqlite);
    seed_and_check_the_fence(&run);
    let (status, spec) = call(&run, "GET", "/openapi.json", None);
    assert_eq!(status, 200);
    let spec = &spec;
    let http = client();
    let mut checked = Vec::new();
    let mut wrong = Vec::new();
    for (path, item) in spec["paths"].as_object().expect("the spec has paths") {
        let item = resolve(spec, item);
        for (method, op) in item.as_object().unwrap() {
            if !["get", "put", "post", "delete", "patch", "head", "options"]
                .contains(&method.as_str())
            {
                continue;
            }
            let params: Vec<&Value> = item["parameters"]
                .as_array()
                .into_iter()
                .chain(op["parameters"].as_array())
                .flatten()
                .map(|p| resolve(spec, p))
                .collect();
            let mut url_path = path.clone();
            let mut query = Vec::new();
            let mut headers = Vec::new();
            for p in &params {
                let name = p["name"].as_str().unwrap_or_default();
                match p["in"].as_str() {
                    Some("path") => {
                        url_path = url_path.replace(&format!("{{{name}}}"), &param_text(spec, p))
                    }
                    Some("query") if p["required"] == true => {
                        query.push((name.to_owned(), param_text(spec, p)))
                    }
                    Some("header") if p["required"] == true => {
                        headers.push((name.to_owned(), param_text(spec, p)))
                    }
                    _ => {}
                }
            }
            let mut req = http
                .request(
                    method.to_uppercase().parse().unwrap(),
                    format!("{}{url_path}", run.server.url),
                )
                .query(&query);
            for (k, v) in &headers {
                req = req.header(k.as_str(), v.as_str());
            }
            let body_schema =
                &resolve(spec, &op["requestBody"])["content"]["application/json"]["schema"];
            if !body_schema.is_null() {
                req = req.json(&sample(spec, body_schema, 0));
            }
            let resp = req.send().unwrap();
            let status = resp.status().as_u16();
            let challenge = resp
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body: Value = resp.json().unwrap_or(Value::Null);
            let what = format!("{} {path} (as {url_path})", method.to_uppercase());
            let public = is_public(spec, op);
            checked.push(format!(
                "{what}: {status}{}",
                if public { " (public)" } else { "" }
            ));
            if public {
                if status == 401 || status == 403 {
                    wrong.push(format!(
                        "{what} is public (security: []) but answered {status}: {body}"
                    ));
                }
            } else if status != 401
                || !challenge.starts_with("Bearer")
                || body["error"]["code"] != "unauthorized"
                || !body["error"]["message"].is_string()
            {
                wrong.push(format!(
                    "{what} needs a token by the spec but answered {status} \
                     (www-authenticate {challenge:?}): {body}"
                ));
            }
        }
    }
    eprintln!(
        "{} operations asked without a token:\n  {}",
        checked.len(),
        checked.join("\n  ")
    );
    assert!(!checked.is_empty(), "the spec lists no operation");
    assert!(
        wrong.is_empty(),
        "{} of {} operations disagree with the spec's security:\n  {}",
        wrong.len(),
        checked.len(),
        wrong.join("\n  ")
    );
}
