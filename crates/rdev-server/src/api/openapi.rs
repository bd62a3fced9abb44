//! The API's contract, served: `GET /openapi.json` (OpenAPI 3.1) and
//! `GET /schemas/callback.json` (the callback body's JSON Schema, draft 2020-12), both
//! public. The document is generated, never written by hand: every route is registered
//! through `utoipa_axum::routes!` from its handler's `#[utoipa::path]` (`super::routes`), so
//! a route cannot exist undocumented, and every body's schema derives from the type the
//! handler parses or answers. [`document`] adds what holds for many operations at once:
//! bearer security, `security: []` on the routes `auth` leaves open, the statuses the
//! authentication layer and the JSON body extractor answer, each error response's codes,
//! and the callback a build with `callback_url` receives. The served copy also states this
//! server's configuration (prompt and timeout limits, templates, providers).
//! `tests/it/api_openapi.rs` requests every documented operation against the real router.

use std::sync::OnceLock;

use axum::{extract::State, Json};
use rdev_core::{api_schema, callback_schema};
use serde_json::{json, Map, Value};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{auth::OPEN_PATHS, error::ErrorBody, AppState};
use crate::services::Services;

/// The contract's own routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(openapi))
        .routes(routes!(callback_json_schema))
}

/// The document's fixed parts; the paths come from the routers.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "rdev",
        description = "Build orchestrator for code agents. Every error answers \
            `{\"error\":{\"code\",\"message\"}}` with a stable code (docs/api.md lists them). \
            Authenticate with `Authorization: Bearer <token>`; `/healthz`, `/readyz`, \
            `/openapi.json` and `/schemas/callback.json` are public."
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "builds", description = "Queue a build of a project."),
        (name = "tasks", description = "Follow, cancel and retry builds."),
        (name = "projects", description = "Projects: a repository rdev builds into."),
        (name = "secrets", description = "The credential store (values are write-only)."),
        (name = "catalog", description = "Templates and agents a build can use."),
        (name = "health", description = "Liveness and readiness probes (public)."),
        (name = "meta", description = "This contract (public)."),
        (name = "metrics", description = "Prometheus metrics."),
    )
)]
pub struct ApiDoc;

/// This document, stating this server's limits, templates and providers.
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API.",
        body = Object)))]
async fn openapi(State(state): State<AppState>) -> Json<Value> {
    Json(document_for(&state))
}

/// The JSON Schema (draft 2020-12) of the callback body a build with `callback_url`
/// receives, signed per Standard Webhooks.
#[utoipa::path(get, path = "/schemas/callback.json", operation_id = "callback_schema",
    tag = "meta",
    responses((status = 200, description = "The callback body's JSON Schema.", body = Object)))]
async fn callback_json_schema() -> Json<Value> {
    Json(callback_schema::callback_json_schema())
}

/// The document as generated, with the default limits.
pub fn document() -> Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| finish(super::routes().into_openapi()))
        .clone()
}

/// The document for `services`' node: its prompt and timeout limits, and the templates
/// and providers a build may name (anything else is answered 422).
pub fn document_for(services: &Services) -> Value {
    let mut doc = document();
    let limits = services.config.limits();
    let schemas = &mut doc["components"]["schemas"];
    let spec = &mut schemas["BuildSpec"]["properties"];
    spec["prompt"] = json!(api_schema::prompt(limits.max_prompt_bytes));
    spec["timeout_secs"] = json!(api_schema::timeout_secs(limits.max_timeout.as_secs()));
    let providers: Vec<String> = services
        .registry
        .list()
        .iter()
        .map(ToString::to_string)
        .collect();
    if !providers.is_empty() {
        spec["provider"] = nullable_enum(&providers, "The agent provider (422 unknown_provider).");
    }
    let infos: Vec<_> = services.templates.list().map(|t| t.info()).collect();
    let templates: Vec<String> = infos.iter().map(|t| t.name.clone()).collect();
    if !templates.is_empty() {
        let t = nullable_enum(
            &templates,
            "A template of this server (422 unknown_template).",
        );
        for schema in ["BuildSpec", "CreateBody", "ProjectChange"] {
            schemas[schema]["properties"]["template"] = t.clone();
        }
    }
    // Which variables each template takes (422 unknown_variable, missing_variable,
    // invalid_variable, invalid_field).
    schemas["CreateBody"]["allOf"] = super::openapi_templates::create_body_conditions(&infos);
    if !infos.is_empty() {
        schemas["BuildSpec"]["allOf"] = super::openapi_templates::build_spec_conditions(&infos);
    }
    // A project follows Woodpecker by name or by id, never both (422 invalid_field).
    let one_ci_repo = json!({"properties": {"woodpecker_repo": {"type": "string"},
        "woodpecker_repo_id": {"type": "integer"}},
        "required": ["woodpecker_repo", "woodpecker_repo_id"]});
    for schema in ["CreateBody", "ProjectChange"] {
        schemas[schema]["not"] = one_ci_repo.clone();
    }
    doc
}

/// `{"oneOf": [{"enum": values}, {"type": "null"}]}`.
fn nullable_enum(values: &[String], description: &str) -> Value {
    json!({"oneOf": [{"type": "string", "enum": values}, {"type": "null"}], "description": description})
}

/// Statuses every authenticated operation can answer, with their codes: no or a bad token,
/// a token whose scope or projects do not allow the route, and a store that fails while
/// the token is looked up.
const AUTHENTICATED: &[(&str, &[&str])] = &[
    ("401", &["unauthorized"]),
    ("403", &["forbidden"]),
    ("500", &["internal"]),
    ("503", &["store_unavailable"]),
];

/// Statuses every operation with a JSON body can answer (`super::error`'s mapping of the
/// body extractor's rejections).
const JSON_BODY: &[(&str, &[&str])] = &[
    ("400", &["invalid_json"]),
    ("413", &["payload_too_large"]),
    ("415", &["unsupported_media_type"]),
    ("422", &["invalid_body"]),
];

/// The generated document completed (see the module doc).
fn finish(doc: utoipa::openapi::OpenApi) -> Value {
    let mut doc = json!(doc);
    doc["components"]["securitySchemes"] = json!({"bearer": {"type": "http", "scheme": "bearer"}});
    doc["security"] = json!([{"bearer": []}]);
    add_callback_schema(&mut doc);
    let paths = doc["paths"]
        .as_object_mut()
        .expect("the document has paths");
    for (path, item) in paths.iter_mut() {
        let public = OPEN_PATHS.contains(&path.as_str());
        for (_, op) in item.as_object_mut().expect("a path item").iter_mut() {
            let Some(op) = op.as_object_mut() else {
                continue;
            };
            let mut extra: Vec<(&str, &[&str])> = Vec::new();
            if public {
                op.insert("security".into(), json!([]));
            } else {
                extra.extend_from_slice(AUTHENTICATED);
            }
            if op.contains_key("requestBody") {
                extra.extend_from_slice(JSON_BODY);
                op["requestBody"]["required"] = json!(true);
            }
            let responses = op
                .entry("responses")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("responses");
            for (status, codes) in extra {
                let r = responses
                    .entry(status)
                    .or_insert_with(|| json!({"description": "codes:"}));
                let d = r["description"].as_str().unwrap_or("codes:").to_owned();
                let sep = if d.trim_end().ends_with(':') {
                    " "
                } else {
                    ", "
                };
                r["description"] = json!(format!("{d}{sep}{}", codes.join(", ")));
            }
            for (_, r) in responses.iter_mut() {
                describe_error_response(r);
                camel_case_links(r);
            }
        }
    }
    doc
}

/// An error response as written in `#[utoipa::path]` (`description = "codes: a, b"`)
/// gets the shared error schema, its codes listed in the description and as
/// `x-error-codes`.
fn describe_error_response(r: &mut Value) {
    let Some(codes) = r["description"]
        .as_str()
        .and_then(|d| d.strip_prefix("codes:"))
    else {
        return;
    };
    let mut codes: Vec<String> = codes
        .split(',')
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
        .collect();
    codes.dedup();
    let listed: Vec<String> = codes.iter().map(|c| format!("`{c}`")).collect();
    r["description"] = json!(format!("Error codes: {}.", listed.join(", ")));
    r["x-error-codes"] = json!(codes);
    r["content"] = json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}});
}

/// utoipa 5 writes a link's `operationId`, `operationRef` and `requestBody` in snake case
/// (fixed in utoipa 6, which needs a newer Rust than this workspace's).
fn camel_case_links(response: &mut Value) {
    let Some(links) = response.get_mut("links").and_then(Value::as_object_mut) else {
        return;
    };
    for link in links.values_mut().filter_map(Value::as_object_mut) {
        for (snake, camel) in [
            ("operation_id", "operationId"),
            ("operation_ref", "operationRef"),
            ("request_body", "requestBody"),
        ] {
            if let Some(v) = link.remove(snake) {
                link.insert(camel.to_owned(), v);
            }
        }
    }
}

/// The callback body's schema as a component, and the `callbacks` of the build operation
/// that says where it goes.
fn add_callback_schema(doc: &mut Value) {
    let mut refs = Vec::new();
    rdev_core::CallbackPayload::schemas(&mut refs);
    let schemas = doc["components"]["schemas"]
        .as_object_mut()
        .expect("components");
    for (name, schema) in refs {
        schemas.entry(name).or_insert_with(|| json!(schema));
    }
    schemas.insert(
        "CallbackPayload".into(),
        json!(callback_schema::callback_payload_schema()),
    );
    let callback = json!({
        "post": {
            "summary": "The build's result, POSTed to callback_url when the task ends",
            "description": "Signed per Standard Webhooks (webhook-id, webhook-timestamp, \
                webhook-signature) with the project's webhook secret; retried with backoff \
                until a 2xx answer. The schema is also published at /schemas/callback.json.",
            "requestBody": {"required": true, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/CallbackPayload"}}}},
            "responses": {"2XX": {"description": "Received; any other answer is retried."}},
        }
    });
    let mut callbacks = Map::new();
    callbacks.insert(
        "result".into(),
        json!({"{$request.body#/callback_url}": callback}),
    );
    if let Some(op) = doc["paths"]["/project/{name}/build"].get_mut("post") {
        op["callbacks"] = Value::Object(callbacks);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
        let mut ops = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                ops.push((method.clone(), path.clone(), op));
            }
        }
        ops
    }

    #[test]
    fn operations_have_unique_ids_and_links_reach_them() {
        let doc = document();
        let ids: Vec<&str> = operations(&doc)
            .iter()
            .map(|(m, p, op)| {
                op["operationId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{m} {p}"))
            })
            .collect();
        let unique: BTreeSet<&str> = ids.iter().copied().collect();
        assert_eq!(unique.len(), ids.len(), "{ids:?}");
        let mut links = 0;
        for (_, _, op) in operations(&doc) {
            for r in op["responses"].as_object().unwrap().values() {
                for link in r["links"].as_object().into_iter().flat_map(|l| l.values()) {
                    let target = link["operationId"].as_str().unwrap();
                    assert!(unique.contains(target), "{target}");
                    links += 1;
                }
            }
        }
        // project -> build and get; build (202, 200) -> task, events, cancel; retry -> task.
        assert_eq!(links, 2 + 2 * 3 + 2);
    }

    #[test]
    fn every_error_response_has_the_error_schema_and_its_codes() {
        let doc = document();
        for (m, p, op) in operations(&doc) {
            let public = op["security"] == json!([]);
            let responses = op["responses"].as_object().unwrap();
            for status in ["401", "403"] {
                assert_eq!(responses.contains_key(status), !public, "{m} {p} {status}");
            }
            for (status, r) in responses {
                if status.starts_with('2') {
                    continue;
                }
                let codes = r["x-error-codes"].as_array();
                assert!(codes.is_some_and(|c| !c.is_empty()), "{m} {p} {status}");
                assert_eq!(
                    r["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/Error",
                    "{m} {p} {status}"
                );
            }
        }
    }
}
