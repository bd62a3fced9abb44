//! `GET /openapi.json`: the API described as OpenAPI 3.1. The document is written here by
//! hand next to the routers; `tests/it/api_openapi.rs` requests every path and method it
//! lists against the real router, so a route that is documented but missing fails a test.

use axum::{routing::get, Json, Router};
use serde_json::{json, Value};

use super::AppState;

/// The OpenAPI route.
pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(|| async { Json(document()) }))
}

fn op(summary: &str, ok: &str, schema: Option<&str>) -> Value {
    let mut responses = json!({
        ok: {"description": "success"},
        "default": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    });
    if let Some(s) = schema {
        responses[ok]["content"] =
            json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{s}")}}});
    }
    json!({"summary": summary, "responses": responses})
}

fn with_body(mut op: Value, schema: &str) -> Value {
    op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
    op
}

/// The OpenAPI document.
pub fn document() -> Value {
    let name = json!([{"name": "name", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"}}]);
    let id = json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}]);
    let mut build = with_body(
        op("Queue a build (answers 202 at once)", "202", Some("Queued")),
        "BuildSpec",
    );
    build["parameters"] = json!([name[0], {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string", "maxLength": 200},
        "description": "Repeating a request with the same key answers 200 with the original task; a different request under a used key answers 422 idempotency_key_reused."}]);
    build["responses"]["200"] = json!({"description": "the task an earlier request with the same Idempotency-Key and body created",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Queued"}}}});
    let mut events = op(
        "Task events as server-sent events; replays after Last-Event-ID, then live",
        "200",
        None,
    );
    events["responses"]["200"]["content"] =
        json!({"text/event-stream": {"schema": {"type": "string"}}});
    let mut metrics = op("Prometheus metrics (OpenMetrics text)", "200", None);
    metrics["responses"]["200"]["content"] =
        json!({"application/openmetrics-text": {"schema": {"type": "string"}}});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "rdev", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Build orchestrator for code agents. Every error is {\"error\":{\"code\",\"message\"}}."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object",
                    "required": ["code", "message"], "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
                "BuildSpec": {"type": "object", "required": ["prompt"], "additionalProperties": false, "properties": {
                    "prompt": {"type": "string"}, "template": {"type": "string"},
                    "variables": {"type": "object", "additionalProperties": {"type": "string"}},
                    "auto_deploy": {"type": "boolean"}, "callback_url": {"type": "string", "format": "uri"},
                    "provider": {"type": "string", "enum": ["claude-code", "opencode"]}, "model": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$"},
                    "timeout_secs": {"type": "integer", "minimum": 1},
                    "session_id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"}}},
                "Queued": {"type": "object", "properties": {"task_id": {"type": "string", "format": "uuid"},
                    "status": {"type": "string"}, "created": {"type": "boolean"}}},
                "Project": {"type": "object", "required": ["name"], "properties": {
                    "name": {"type": "string"}, "repo_url": {"type": "string"}, "default_branch": {"type": "string"},
                    "template": {"type": ["string", "null"]}, "variables": {"type": "object"},
                    "woodpecker_repo_id": {"type": ["integer", "null"]}, "deploy_url_pattern": {"type": ["string", "null"]},
                    "provider": {"type": ["string", "null"]},
                    "push_protection": {"type": "string", "enum": ["block", "warn"], "default": "block",
                        "description": "what a secret found in the commits a build is about to push does: block fails the task with secret_in_commit, warn pushes and records the findings"},
                    "push_protection_allow": {"type": "array", "items": {"type": "string", "maxLength": 256}, "maxItems": 64,
                        "description": "path patterns (*, ?, **, trailing / for a directory) of known test fixtures where credential formats are not findings"},
                    "created_repo": {"type": ["string", "null"], "readOnly": true,
                        "description": "the bare repository rdev created for the project, removed with it; null when repo_url was given"},
                    "secrets": {"type": "object", "properties": {"env": {"type": "array", "items": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2}},
                        "git_token": {"type": ["string", "null"]}}}}},
                "Deleted": {"type": "object", "description": "What deleting a project did.", "properties": {
                    "project": {"type": "string"},
                    "cancelled_tasks": {"type": "array", "items": {"type": "string", "format": "uuid"}},
                    "secrets_removed": {"type": "array", "items": {"type": "string"}},
                    "callbacks_expired": {"type": "integer"},
                    "tokens_revoked": {"type": "array", "items": {"type": "string"}},
                    "tokens_narrowed": {"type": "array", "items": {"type": "string"}},
                    "repository": {"type": "object", "properties": {
                        "outcome": {"type": "string", "enum": ["removed", "absent", "kept", "failed"]},
                        "path": {"type": "string"}, "reason": {"type": "string"}, "error": {"type": "string"}}}}},
                "Task": {"type": "object", "properties": {
                    "id": {"type": "string", "format": "uuid"}, "project": {"type": "string"},
                    "status": {"type": "string", "enum": ["queued", "running", "completed", "failed", "cancelled"]},
                    "attempt": {"type": "integer"}, "spec": {"$ref": "#/components/schemas/BuildSpec"},
                    "result": {"type": ["object", "null"]}, "error": {"type": ["string", "null"]},
                    "attempts": {"type": "array"}, "callbacks": {"type": "array"}}},
                "Callback": {"type": "object", "description": "POSTed to callback_url, signed per Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature).",
                    "properties": {"task_id": {"type": "string"}, "project_id": {"type": "string"},
                        "status": {"type": "string", "enum": ["completed", "failed", "cancelled"]},
                        "result": {"type": "object", "properties": {"output": {"type": "string"}, "artifacts": {"type": "object",
                            "properties": {"commit_sha": {"type": ["string", "null"]}, "deploy_url": {"type": ["string", "null"]}}}}},
                        "error": {"type": "string"}, "cost_usd": {"type": "number"}, "duration_ms": {"type": "integer"}}}
            }
        },
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {"get": op("Liveness", "200", None)},
            "/readyz": {"get": op("Readiness: the database answers and at least one agent provider is ready (503 no_provider_ready otherwise)", "200", None)},
            "/metrics": {"get": metrics},
            "/openapi.json": {"get": op("This document", "200", None)},
            "/agents": {"get": op("Code agents, the default first, each with its state (ready, not_configured, unavailable) and, when not ready, reason and fix", "200", None)},
            "/templates": {"get": op("Project templates", "200", None)},
            "/templates/{name}": {"parameters": name, "get": op("One template and its variables", "200", None)},
            "/projects": {"get": op("List projects", "200", None),
                          "post": with_body(op("Create a project (shows its webhook secret once)", "201", Some("Project")), "Project")},
            "/projects/{name}": {"parameters": name, "get": op("Show a project", "200", Some("Project")),
                                 "patch": with_body(op("Change a project (JSON merge patch)", "200", Some("Project")), "Project"),
                                 "delete": op("Delete a project: cancel its queued and running tasks, delete its secrets and signing secret, remove the repository rdev created", "200", Some("Deleted"))},
            "/projects/{name}/webhook-secret": {"parameters": name, "post": op("Rotate the callback signing secret", "200", None)},
            "/project/{name}/build": {"post": build},
            "/tasks": {"get": {"summary": "List tasks, newest first", "parameters": [
                {"name": "project", "in": "query", "schema": {"type": "string"}},
                {"name": "status", "in": "query", "schema": {"type": "string"}},
                {"name": "before", "in": "query", "schema": {"type": "string", "format": "uuid"}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "maximum": 500}}],
                "responses": {"200": {"description": "tasks"}}}},
            "/tasks/{id}": {"parameters": id, "get": op("A task with its attempts and callback deliveries", "200", Some("Task"))},
            "/tasks/{id}/events": {"parameters": id, "get": events},
            "/tasks/{id}/cancel": {"parameters": id, "post": op("Cancel a queued or running task", "200", Some("Task"))},
            "/tasks/{id}/retry": {"parameters": id, "post": op("Queue a new task with the spec of a failed or cancelled one (202; 200 with the same retry when asked again; 409 not_retryable otherwise)", "202", None)},
            "/secrets": {"get": op("Secret metadata (never values)", "200", None)},
            "/secrets/{scope}/{name}": {"parameters": [
                    {"name": "scope", "in": "path", "required": true, "schema": {"type": "string"}, "description": "global or project:<name>"},
                    {"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
                "put": {"summary": "Store a new version (write-only)", "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["value"], "properties": {"value": {"type": "string"}}}}}}, "responses": {"201": {"description": "created"}, "200": {"description": "new version"}}},
                "delete": op("Delete every version", "200", None)}
        }
    })
}
