//! The OpenAPI document matches the router: every documented path and method reaches a
//! real handler (never the "no route" or "method not allowed" fallbacks). The contract is
//! public where the document says so (`security: []`) and nowhere else, and the callback's
//! JSON Schema served is the one generated from the typed payload.

use rdev_core::SecretString;
use serde_json::Value;

use crate::common::{get_json, spawn_app, spawn_app_configured};

#[tokio::test]
async fn every_documented_route_exists() {
    let app = spawn_app().await;
    let c = reqwest::Client::new();
    let doc = get_json(&c, format!("{}/openapi.json", app.address)).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 19);
    let mut checked = 0;
    for (path, item) in paths {
        let concrete = path
            .replace("{name}", "site")
            .replace("{scope}", "global")
            .replace("{id}", "01890000-0000-7000-8000-000000000000");
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let mut req = c.request(m, format!("{}{concrete}", app.address));
            if path.ends_with("/events") {
                // Only the status matters; the stream of an unknown task ends at once.
                req = req.timeout(std::time::Duration::from_secs(5));
            }
            if matches!(method, "post" | "put" | "patch") {
                req = req.header("content-type", "application/json").body("{}");
            }
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            let code = body["error"]["code"].as_str().unwrap_or_default();
            let fallback = (status == 404
                && body["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("no route"))
                || code == "method_not_allowed";
            assert!(
                !fallback,
                "{method} {path} is documented but not routed ({status} {body})"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 23, "every documented operation was requested");
}

/// With an API token configured, the operations marked `security: []` answer without
/// one and every other operation answers 401.
#[tokio::test]
async fn only_the_operations_marked_public_answer_without_a_token() {
    let app = spawn_app_configured(None, |c| {
        c.api_token = Some(SecretString::new("openapi-test-admin"));
    })
    .await;
    let c = reqwest::Client::new();
    let doc = get_json(&c, format!("{}/openapi.json", app.address)).await;
    assert_eq!(doc["openapi"], "3.1.0", "the document itself is public");
    let mut public = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{name}", "site")
            .replace("{scope}", "global")
            .replace("{id}", "01890000-0000-7000-8000-000000000000");
        for (method, op) in item.as_object().unwrap() {
            let open = op["security"] == serde_json::json!([]);
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let status = c
                .request(m, format!("{}{concrete}", app.address))
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status == 401, !open, "{method} {path}: {status}");
            if open {
                public.push(path.as_str());
            }
        }
    }
    public.sort_unstable();
    assert_eq!(
        public,
        [
            "/healthz",
            "/openapi.json",
            "/readyz",
            "/schemas/callback.json"
        ]
    );
}

#[tokio::test]
async fn the_callback_schema_served_is_the_generated_one() {
    let app = spawn_app().await;
    let c = reqwest::Client::new();
    let served = get_json(&c, format!("{}/schemas/callback.json", app.address)).await;
    assert_eq!(served, rdev_core::callback_schema::callback_json_schema());
    assert_eq!(
        served["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
}
