//! The one relaxation of Schemathesis' `positive_data_acceptance` check, and the check
//! that replaces it. Two operations answer 422 to some requests that are valid by the
//! document, for reasons no schema can state because they depend on state:
//!
//! - `POST /project/{name}/build`: a `session_id` no build of this project reported
//!   (`unknown_session`), an `Idempotency-Key` used before with another body
//!   (`idempotency_key_reused`), variables checked against the project's own template when
//!   the request names none (`unknown_variable`, `missing_variable`, `invalid_variable`,
//!   and `invalid_field` for variables when the project has no template either), and a
//!   provider without model credentials (`agent_not_configured`);
//! - `POST /projects`: a local `repo_url` with no repository git can clone there
//!   (`invalid_field`; what is on the disk is state).
//!
//! So Schemathesis is told that 422 is expected there ([`ST_CONFIG`]), and every such
//! answer is read back from its NDJSON report ([`unexplained_rejections`]): a 422 to a
//! positive case must carry one of those codes, under the condition that explains it. Any
//! other 422 (a schema that says less than the server checks) still fails the test.

use base64::Engine;
use serde_json::Value;

/// Schemathesis configuration for the two operations.
pub const ST_CONFIG: &str = "
# State-dependent 422s (see crates/rdev-cli/tests/it/schemathesis/state_dependent.rs):
# allowed here, then each one checked against the NDJSON report by the test.
[[operations]]
include-operation-id = \"build\"
checks.positive_data_acceptance.expected-statuses = [\"2xx\", \"3xx\", \"401\", \"403\", \"404\", \"409\", \"422\", \"429\", \"5xx\"]

[[operations]]
include-operation-id = \"create_project\"
checks.positive_data_acceptance.expected-statuses = [\"2xx\", \"3xx\", \"401\", \"403\", \"404\", \"409\", \"422\", \"429\", \"5xx\"]
";

/// The operations [`ST_CONFIG`] relaxes, as Schemathesis records their paths.
const RELAXED: [&str; 2] = ["/project/{name}/build", "/projects"];

/// A recorded body: JSON, or `{"$base64": ...}` for bytes.
fn body_json(v: &Value) -> Value {
    match v.get("$base64").and_then(Value::as_str) {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null),
        None => v.clone(),
    }
}

/// Whether a 422 with `code` to `case` (a POST to `path`) is explained by state.
fn explained(path: &str, code: &str, message: &str, case: &Value) -> bool {
    let body = &case["body"];
    let has = |field: &str| !body[field].is_null();
    let header = |name: &str| {
        case["headers"]
            .as_object()
            .is_some_and(|h| h.keys().any(|k| k.eq_ignore_ascii_case(name)))
    };
    if path == "/projects" {
        return code == "invalid_field"
            && has("repo_url")
            && message.starts_with("invalid repo_url: no repository git can clone at this path");
    }
    match code {
        "unknown_session" => has("session_id"),
        "idempotency_key_reused" => header("idempotency-key"),
        "agent_not_configured" => true,
        "unknown_variable" | "missing_variable" | "invalid_variable" => !has("template"),
        "invalid_field" => !has("template") && message.contains("variables"),
        _ => false,
    }
}

/// The positive cases of the relaxed operations in the NDJSON report `ndjson` that were
/// answered 422 for a reason state does not explain, as `"<path> <code>: <message> for
/// <body>"`; and how many state-explained ones there were.
pub fn unexplained_rejections(ndjson: &str) -> (Vec<String>, usize) {
    let mut unexplained = Vec::new();
    let mut explained_count = 0;
    for line in ndjson.lines() {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let recorder = &event["ScenarioFinished"]["recorder"];
        let (Some(cases), Some(interactions)) = (
            recorder["cases"].as_object(),
            recorder["interactions"].as_object(),
        ) else {
            continue;
        };
        for (id, case) in cases {
            let case = &case["value"];
            let meta = &case["meta"];
            let positive = meta["generation"]["mode"] == "positive"
                && meta["components"]
                    .as_object()
                    .is_none_or(|c| c.values().all(|m| m["mode"] == "positive"));
            let path = case["path"].as_str().unwrap_or_default();
            if !positive || case["method"] != "POST" || !RELAXED.contains(&path) {
                continue;
            }
            let response = &interactions
                .get(id)
                .map_or(&Value::Null, |i| &i["response"]);
            if response["status_code"] != 422 {
                continue;
            }
            // The response body, as recorded (`content`; `body` in other versions).
            let recorded = match &response["content"] {
                Value::Null => &response["body"],
                content => content,
            };
            let answer = body_json(recorded);
            let code = answer["error"]["code"].as_str().unwrap_or_default();
            let message = answer["error"]["message"].as_str().unwrap_or_default();
            if explained(path, code, message, case) {
                explained_count += 1;
            } else {
                unexplained.push(format!("{path} {code}: {message} for {}", case["body"]));
            }
        }
    }
    (unexplained, explained_count)
}
