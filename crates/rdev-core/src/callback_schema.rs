//! The callback body's JSON Schema (draft 2020-12), published at `/schemas/callback.json`
//! and checked against every callback the end-to-end tests receive. It is generated from
//! [`CallbackPayload`]'s `utoipa::ToSchema` (so a field cannot change without the schema
//! changing), with the component schemas it references moved under `$defs`. Nothing here
//! sends or reads a callback.

use serde_json::{json, Map, Value};
use utoipa::{
    openapi::{RefOr, Schema},
    PartialSchema, ToSchema,
};

use crate::{api_schema::with_keywords, CallbackPayload, TaskStatus};

/// Where OpenAPI puts component schemas, and where a standalone schema keeps them.
const COMPONENTS: &str = "#/components/schemas/";
const DEFS: &str = "#/$defs/";

/// [`CallbackPayload`]'s schema with the rules between its fields that the derive cannot
/// state: `cost_usd` is present whenever `result` is, a completed task's callback has its
/// result and a failed task's its error. The OpenAPI document uses it too.
pub fn callback_payload_schema() -> RefOr<Schema> {
    let RefOr::T(Schema::Object(object)) = CallbackPayload::schema() else {
        unreachable!("a struct derives an object schema");
    };
    let when = |status: TaskStatus, field: &str| {
        json!({
            "if": {"properties": {"status": {"const": status.as_str()}}},
            "then": {"required": [field]},
        })
    };
    with_keywords(
        object,
        [
            ("dependentRequired", json!({"result": ["cost_usd"]})),
            (
                "allOf",
                json!([
                    when(TaskStatus::Completed, "result"),
                    when(TaskStatus::Failed, "error")
                ]),
            ),
        ],
    )
    .into()
}

/// The JSON Schema of the callback body.
pub fn callback_json_schema() -> Value {
    let mut defs = Vec::new();
    CallbackPayload::schemas(&mut defs);
    let mut root = json!(callback_payload_schema());
    let defs: Map<String, Value> = defs.into_iter().map(|(k, v)| (k, json!(v))).collect();
    let obj = root.as_object_mut().expect("an object schema");
    let mut head = Map::new();
    head.insert(
        "$schema".into(),
        json!("https://json-schema.org/draft/2020-12/schema"),
    );
    head.insert("title".into(), json!("rdev callback"));
    head.extend(std::mem::take(obj));
    head.insert("$defs".into(), Value::Object(defs));
    let mut schema = Value::Object(head);
    rewrite_refs(&mut schema);
    schema
}

/// Points every `$ref` at `$defs` instead of the OpenAPI components.
fn rewrite_refs(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) if r.starts_with(COMPONENTS) => {
                        *r = format!("{DEFS}{}", &r[COMPONENTS.len()..]);
                    }
                    (_, v) => rewrite_refs(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        callback_payload, AgentRun, AgentSummary, Artifacts, BuildResult, BuildSpec, ProjectName,
        Usage, WorkTask,
    };

    fn validator() -> jsonschema::Validator {
        let schema = callback_json_schema();
        jsonschema::meta::validate(&schema).expect("a valid draft 2020-12 schema");
        jsonschema::draft202012::new(&schema).expect("compiles")
    }

    fn task(status: TaskStatus, result: Option<BuildResult>, error: Option<&str>) -> Value {
        let now = chrono::Utc::now();
        let mut t = WorkTask::new(
            ProjectName::parse("site").unwrap(),
            BuildSpec::new("x"),
            now,
        );
        t.status = status;
        t.result = result;
        t.error = error.map(str::to_owned);
        serde_json::to_value(callback_payload(&t)).unwrap()
    }

    fn ran() -> BuildResult {
        BuildResult {
            output: "ok".into(),
            artifacts: Artifacts {
                commit_sha: Some("abc".into()),
                ..Artifacts::default()
            },
            duration_ms: Some(5),
            agent: AgentSummary {
                run: Some(AgentRun {
                    provider: "claude-code".into(),
                    session_id: None,
                    num_turns: 1,
                    usage: Usage::default(),
                    reported_cost_usd: Some(None),
                }),
                pipeline: None,
            },
            ..BuildResult::default()
        }
    }

    #[test]
    fn every_shape_the_server_sends_is_valid() {
        let v = validator();
        let mut with_extra = ran();
        with_extra
            .extra
            .insert("from_a_newer_version".into(), json!({"kept": [1]}));
        for body in [
            task(TaskStatus::Completed, Some(ran()), None),
            task(TaskStatus::Completed, Some(BuildResult::default()), None),
            task(TaskStatus::Completed, Some(with_extra), None),
            task(TaskStatus::Failed, None, Some("boom")),
            task(TaskStatus::Failed, Some(ran()), Some("CI failed")),
            task(TaskStatus::Cancelled, None, None),
        ] {
            let errors: Vec<String> = v.iter_errors(&body).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{body}: {errors:?}");
        }
    }

    #[test]
    fn bodies_that_break_the_contract_are_invalid() {
        let v = validator();
        let good = task(TaskStatus::Completed, Some(ran()), None);
        let broken = |f: &dyn Fn(&mut Value)| {
            let mut b = good.clone();
            f(&mut b);
            b
        };
        for (why, body) in [
            ("status done", broken(&|b| b["status"] = json!("done"))),
            ("still running", broken(&|b| b["status"] = json!("running"))),
            (
                "bad project",
                broken(&|b| b["project_id"] = json!("Not A Slug")),
            ),
            (
                "task id missing",
                broken(&|b| drop(b.as_object_mut().unwrap().remove("task_id"))),
            ),
            (
                "cost not lifted",
                broken(&|b| drop(b.as_object_mut().unwrap().remove("cost_usd"))),
            ),
            (
                "completed, no result",
                broken(&|b| drop(b.as_object_mut().unwrap().remove("result"))),
            ),
            ("duration null", broken(&|b| b["duration_ms"] = Value::Null)),
            ("result null", broken(&|b| b["result"] = Value::Null)),
            ("error null", broken(&|b| b["error"] = Value::Null)),
            (
                "output missing",
                broken(&|b| drop(b["result"].as_object_mut().unwrap().remove("output"))),
            ),
            (
                "artifacts half",
                broken(&|b| {
                    drop(
                        b["result"]["artifacts"]
                            .as_object_mut()
                            .unwrap()
                            .remove("deploy_url"),
                    )
                }),
            ),
            (
                "run half",
                broken(&|b| {
                    drop(
                        b["result"]["agent"]
                            .as_object_mut()
                            .unwrap()
                            .remove("num_turns"),
                    )
                }),
            ),
            (
                "tokens negative",
                broken(&|b| b["result"]["agent"]["usage"]["input_tokens"] = json!(-1)),
            ),
            ("failed, no error", task(TaskStatus::Failed, None, None)),
        ] {
            assert!(!v.is_valid(&body), "{why}: {body}");
        }
    }
}
