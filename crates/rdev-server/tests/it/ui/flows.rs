//! What a person does with the UI, in headless Chromium against the real app, the real
//! `claude` CLI and the scripted model: log in, create a project from the astro-landing
//! form, start a build and watch it complete without reloading, cancel a slow build, see a
//! failed callback. Every page visited is checked at 1440 and 390 px wide and saved as a
//! screenshot under `target/ui-screenshots/`.

use std::time::Duration;

use rdev_testkit::CallbackReceiver;
use reqwest::Method;
use serde_json::{json, Value};

use super::{browser::Browser, world, ADMIN};

/// Marks the current document; [`same_document`] tells whether it was never reloaded.
async fn mark(b: &Browser) {
    b.js("window.__rdevMark = 'kept'; return null").await;
}

async fn same_document(b: &Browser) -> bool {
    b.js("return window.__rdevMark === 'kept'").await == json!(true)
}

#[tokio::test]
async fn ui_login_create_from_template_build_and_watch_it_complete_live() {
    let w = world(Some(ADMIN)).await;
    let base = &w.app.address;
    let b = Browser::start().await;

    // Log in: a wrong token is refused next to the field, the right one lets us in.
    b.goto(&format!("{base}/ui/builds")).await;
    assert!(b.url().await.ends_with("/ui/login"), "{}", b.url().await);
    b.check_and_shoot("login").await;
    b.fill("#token", "not-the-token").await;
    b.click("button[type=submit]").await;
    assert!(b.wait_text("#token-error", 10).await.contains("not valid"));
    b.fill("#token", ADMIN).await;
    b.click("main button[type=submit]").await;
    b.wait_text("#board", 10).await;
    assert!(b.url().await.ends_with("/ui/builds"));

    // Create a project from the astro-landing template; a bad variable is shown at its field.
    b.goto(&format!("{base}/ui/projects/new")).await;
    b.check_and_shoot("project-templates").await;
    b.click("a[href='/ui/projects/new?template=astro-landing']")
        .await;
    b.wait_text("#new-project", 10).await;
    b.fill("#f-name", "landing").await;
    b.fill("#f-var-title", "Rdev Landing").await;
    b.fill("#f-var-accent_color", "blue").await;
    b.click("#create-project").await;
    let err = b.wait_text("#f-var-accent_color-error", 20).await;
    assert!(err.contains("accent_color"), "{err}");
    let described = b
        .js("return document.getElementById('f-var-accent_color').getAttribute('aria-describedby')")
        .await;
    assert!(described
        .as_str()
        .unwrap()
        .contains("f-var-accent_color-error"));
    b.check_and_shoot("project-form-error").await;
    b.fill("#f-var-accent_color", "#0f766e").await;
    b.click("#create-project").await;
    let secret = b
        .client
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(fantoccini::Locator::Css("#webhook-secret"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(secret.starts_with("whsec_"), "{secret}");
    b.check_and_shoot("project-created").await;

    // Start a build from the form and watch it on its page, never reloading.
    b.goto(&format!("{base}/ui/builds/new?project=landing"))
        .await;
    b.wait_text("#new-build", 10).await;
    b.check_and_shoot("new-build").await;
    b.fill(
        "#f-prompt",
        "Add a note.\n@@sleep 2500\n@@write notes.txt\nwritten from the UI test\n@@end\n@@sleep 2500\n@@reply The note is written.",
    )
    .await;
    b.click("#start-build").await;
    b.wait_text("#build-status", 20).await;
    assert!(b.url().await.contains("/ui/builds/"));
    mark(&b).await;
    b.wait_js(
        "document.querySelector('#events .k-tool_use .tool-target')?.textContent.includes('notes.txt')",
        120,
        "the agent's Write tool call shows with its target",
    )
    .await;
    b.wait_js(
        "document.querySelector('#build-status')?.dataset.status === 'completed'",
        120,
        "the build page shows completed",
    )
    .await;
    assert!(same_document(&b).await, "the page was reloaded");
    let tool = b.wait_text("#events .k-tool_use", 5).await;
    assert!(tool.contains("Write"), "{tool}");
    b.wait_js(
        "document.querySelector('#timeline li[data-step=\"agent\"]') && document.querySelector('#timeline li[data-step=\"end\"]')",
        10,
        "the timeline shows the agent step and the end",
    )
    .await;
    b.wait_js(
        "document.querySelector('#details')?.textContent.includes('completed')",
        10,
        "the attempts table is refreshed at the end",
    )
    .await;
    assert!(same_document(&b).await, "the page was reloaded");
    b.check_and_shoot("build-completed").await;

    // The list shows it, with its figures.
    b.goto(&format!("{base}/ui/builds?project=landing")).await;
    assert_eq!(b.wait_text("#fig-succeeded", 10).await, "1");
    b.check_and_shoot("builds").await;
    b.goto(&format!("{base}/ui/projects/landing")).await;
    b.wait_text("#rotate-secret", 10).await;
    b.check_and_shoot("project").await;
    b.close().await;
}

#[tokio::test]
async fn ui_cancel_a_slow_build_from_its_page() {
    let w = world(None).await;
    let base = &w.app.address;
    let api = w.app.client();
    let (status, body) = api
        .call(Method::POST, "/projects", Some(json!({"name": "slow"})))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = api
        .call(
            Method::POST,
            "/project/slow/build",
            Some(json!({"prompt": "Take your time.\n@@write a.txt\nx\n@@end\n@@sleep 60000\n@@reply late"})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["task_id"].as_str().unwrap().to_owned();

    let b = Browser::start().await;
    b.goto(&format!("{base}/ui/builds/{id}")).await;
    // Live: the page turns to running and shows the tool call by itself.
    b.wait_js(
        "document.querySelector('#events .k-tool_use')",
        120,
        "the slow build's tool call shows",
    )
    .await;
    assert_eq!(
        b.js("return document.querySelector('#build-status').dataset.status")
            .await,
        json!("running")
    );
    b.check_and_shoot("build-running").await;
    b.click("#cancel-build").await;
    b.wait_js(
        "document.querySelector('#build-status')?.dataset.status === 'cancelled'",
        30,
        "the build page shows cancelled",
    )
    .await;
    assert!(
        b.js("return !document.querySelector('#cancel-build')")
            .await
            == json!(true)
    );
    b.wait_text("#retry-build", 5).await;
    let (_, t) = api.call(Method::GET, &format!("/tasks/{id}"), None).await;
    assert_eq!(t["status"], "cancelled", "{t}");
    b.check_and_shoot("build-cancelled").await;
    b.close().await;
}

#[tokio::test]
async fn ui_shows_a_failed_callback_with_its_http_status() {
    let w = world(None).await;
    let base = &w.app.address;
    let receiver = CallbackReceiver::start().await.unwrap();
    receiver.fail_with(500);
    let api = w.app.client();
    let (status, body) = api
        .call(Method::POST, "/projects", Some(json!({"name": "hooks"})))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = api
        .call(
            Method::POST,
            "/project/hooks/build",
            Some(json!({"prompt": "@@sleep 2000\n@@reply done", "callback_url": receiver.url()})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["task_id"].as_str().unwrap().to_owned();

    let b = Browser::start().await;
    b.goto(&format!("{base}/ui/builds/{id}")).await;
    mark(&b).await;
    b.wait_js(
        "document.querySelector('#callback-table .cb-http')?.textContent.trim() === '500'",
        120,
        "the failed delivery's HTTP status shows",
    )
    .await;
    assert!(same_document(&b).await, "the page was reloaded");
    let state = b.wait_text("#callback-table .cb-state", 5).await;
    assert!(state.contains("failing"), "{state}");
    let (_, t): (u16, Value) = api.call(Method::GET, &format!("/tasks/{id}"), None).await;
    assert!(t["callbacks"][0]["last_error"]
        .as_str()
        .unwrap()
        .contains("500"));
    b.check_and_shoot_at("build-callback-failed", Some("#callback-table"))
        .await;
    b.close().await;
}
