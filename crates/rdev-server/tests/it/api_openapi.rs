//! The OpenAPI document matches the router: every documented path and method reaches a
//! real handler (never the "no route" or "method not allowed" fallbacks).

use serde_json::Value;

use crate::common::{get_json, spawn_app};

#[tokio::test]
async fn every_documented_route_exists() {
    let app = spawn_app().await;
    let c = reqwest::Client::new();
    let doc = get_json(&c, format!("{}/openapi.json", app.address)).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 18);
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
    assert_eq!(checked, 22, "every documented operation was requested");
}
