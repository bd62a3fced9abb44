//! A project's Woodpecker repository over HTTP, on both backends: by numeric id
//! (`woodpecker_repo_id`) or by full name (`woodpecker_repo = "owner/name"`), never both,
//! on create and on PATCH, and a name that is not `owner/name` refused.

use rdev_testkit::pg::PgDatabase;
use serde_json::{json, Value};

use crate::common::{get_json, spawn_app, spawn_app_with, TestApp};

/// Asserts a 422 `invalid_field` whose message names `field` and holds `needle`.
async fn refused(r: reqwest::Response, field: &str, needle: &str) {
    assert_eq!(r.status(), 422);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["code"], "invalid_field", "{err}");
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(msg.contains(field) && msg.contains(needle), "{msg}");
}

async fn woodpecker_repo_by_id_or_name_never_both(app: TestApp) {
    let c = reqwest::Client::new();
    let base = &app.address;
    let post = |body: Value| c.post(format!("{base}/projects")).json(&body).send();
    let patch = |body: Value| c.patch(format!("{base}/projects/named")).json(&body).send();

    let r = post(json!({"name": "named", "repo_url": "/srv/git/named.git",
                       "woodpecker_repo": "Acme/site.v2"}))
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["woodpecker_repo"], "Acme/site.v2");
    assert_eq!(created["woodpecker_repo_id"], Value::Null);
    let shown = get_json(&c, format!("{base}/projects/named")).await;
    assert_eq!(shown["woodpecker_repo"], "Acme/site.v2");

    // Both at creation; names that are not owner/name.
    let both = json!({"name": "both", "repo_url": "/x.git", "woodpecker_repo_id": 3,
                      "woodpecker_repo": "acme/site"});
    refused(post(both).await.unwrap(), "woodpecker_repo", "not both").await;
    for bad in ["site", "acme/", "acme/../site", "acme/si te", "/acme/site"] {
        let body = json!({"name": "bad", "repo_url": "/x.git", "woodpecker_repo": bad});
        refused(post(body).await.unwrap(), "woodpecker_repo", "owner/name").await;
    }
    let r = post(json!({"name": "bad", "repo_url": "/x.git", "woodpecker_repo": 7}))
        .await
        .unwrap();
    assert_eq!(r.status(), 422, "a number is not a name");
    let listed = get_json(&c, format!("{base}/projects")).await;
    assert_eq!(listed["projects"].as_array().unwrap().len(), 1, "{listed}");

    // PATCH: adding the id to a project named by name is both; switching needs the name
    // cleared in the same change.
    refused(
        patch(json!({"woodpecker_repo_id": 7})).await.unwrap(),
        "woodpecker_repo",
        "not both",
    )
    .await;
    let r = patch(json!({"woodpecker_repo_id": 7, "woodpecker_repo": null}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let shown = get_json(&c, format!("{base}/projects/named")).await;
    assert_eq!(
        (&shown["woodpecker_repo_id"], &shown["woodpecker_repo"]),
        (&json!(7), &Value::Null)
    );
    refused(
        patch(json!({"woodpecker_repo": "no-slash", "woodpecker_repo_id": null}))
            .await
            .unwrap(),
        "woodpecker_repo",
        "owner/name",
    )
    .await;
    let r = patch(json!({"woodpecker_repo": "group/sub/site", "woodpecker_repo_id": null}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let shown = get_json(&c, format!("{base}/projects/named")).await;
    assert_eq!(
        (&shown["woodpecker_repo_id"], &shown["woodpecker_repo"]),
        (&Value::Null, &json!("group/sub/site"))
    );
}

#[tokio::test]
async fn woodpecker_repo_by_id_or_name_on_sqlite() {
    woodpecker_repo_by_id_or_name_never_both(spawn_app().await).await;
}

#[tokio::test]
async fn woodpecker_repo_by_id_or_name_on_postgres() {
    woodpecker_repo_by_id_or_name_never_both(
        spawn_app_with(Some(PgDatabase::create().await)).await,
    )
    .await;
}
