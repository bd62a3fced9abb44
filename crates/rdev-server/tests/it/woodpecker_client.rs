//! The Woodpecker client against the fake server from rdev-testkit, which serves the same
//! routes, filters, pages and JSON shapes as Woodpecker v3.17.0. Progress is driven per
//! request, not by time, so these tests only wait as long as the client's own poll interval.

use std::time::Duration;

use rdev_core::{CiRepo, ErrorCode, ProjectName, SecretString, WoodpeckerRepo};
use rdev_server::woodpecker::{
    deploy_url, validate_deploy_url_pattern, PipelineQuery, PipelineStatus, WoodpeckerClient,
    WoodpeckerError,
};
use rdev_testkit::woodpecker::{FakeWoodpecker, NewPipeline};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "wp-token-s3cr3t";
const REPO: i64 = 7;
const SHA: &str = "3f2a9c1d8e7b6a5f4c3d2e1f0a9b8c7d6e5f4a3b";
const POLL: Duration = Duration::from_millis(5);
const LONG: Duration = Duration::from_secs(30);

async fn setup() -> (FakeWoodpecker, WoodpeckerClient) {
    let fake = FakeWoodpecker::start(TOKEN).await.unwrap();
    let client = WoodpeckerClient::new(&fake.url(), SecretString::new(TOKEN)).unwrap();
    (fake, client)
}

#[tokio::test]
async fn follow_sees_pending_then_running_then_success_and_reports_steps() {
    let (fake, client) = setup().await;
    let n = fake.add_pipeline(REPO, SHA, "main");
    fake.script(REPO, n, &["pending", "running", "success"]);
    let out = client
        .follow(REPO, n, POLL, LONG, &CancellationToken::new())
        .await
        .unwrap();
    assert!(out.succeeded());
    assert_eq!(out.status(), &PipelineStatus::Success);
    assert_eq!(out.pipeline.commit, SHA);
    let names: Vec<_> = out.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["clone", "build", "deploy"]);
    assert!(out.steps.iter().all(|s| s.state == PipelineStatus::Success));
    assert_eq!(out.steps[0].workflow, "woodpecker");
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert!(reqs
        .iter()
        .all(|r| r.authorized && r.uri == format!("/api/repos/{REPO}/pipelines/{n}")));
}

#[tokio::test]
async fn follow_reports_failure_with_the_failed_step() {
    let (fake, client) = setup().await;
    let n = fake.add_pipeline(REPO, SHA, "main");
    fake.script(REPO, n, &["running", "failure"]);
    let out = client
        .follow(REPO, n, POLL, LONG, &CancellationToken::new())
        .await
        .unwrap();
    assert!(!out.succeeded());
    assert_eq!(out.status(), &PipelineStatus::Failure);
    let build = out.steps.iter().find(|s| s.name == "build").unwrap();
    assert_eq!(build.state, PipelineStatus::Failure);
    assert_eq!(build.exit_code, 1);
    let deploy = out.steps.iter().find(|s| s.name == "deploy").unwrap();
    assert_eq!(deploy.state, PipelineStatus::Skipped);
}

#[tokio::test]
async fn every_terminal_status_ends_follow() {
    for status in ["killed", "error", "canceled", "declined", "skipped"] {
        let (fake, client) = setup().await;
        let n = fake.add_pipeline(REPO, SHA, "main");
        fake.script(REPO, n, &["running", status]);
        let out = client
            .follow(REPO, n, POLL, LONG, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(out.status().as_str(), status);
        assert!(!out.succeeded());
    }
}

#[tokio::test]
async fn find_waits_for_a_pipeline_that_appears_late() {
    let (fake, client) = setup().await;
    fake.add_repo(REPO);
    let n = fake.add_hidden_pipeline(REPO, SHA, "main", 2);
    let found = client
        .find_pipeline_for_commit(
            REPO,
            PipelineQuery::commit(&SHA[..12]),
            LONG,
            POLL,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(found.number, n);
    assert_eq!(found.status, PipelineStatus::Pending);
    assert!(
        found.workflows.is_empty(),
        "the list endpoint has no workflows"
    );
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert_eq!(
        reqs[0].uri,
        format!("/api/repos/{REPO}/pipelines?page=1&perPage=50")
    );
}

#[tokio::test]
async fn find_picks_the_newest_pipeline_for_the_commit() {
    let (fake, client) = setup().await;
    fake.add_pipeline(REPO, SHA, "main");
    let other = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    fake.add_pipeline(REPO, other, "main");
    let newest = fake.add_pipeline(REPO, SHA, "main");
    let listed = client.list_pipelines(REPO).await.unwrap();
    let numbers: Vec<_> = listed.iter().map(|p| p.number).collect();
    assert_eq!(numbers, [3, 2, 1], "newest first");
    let found = client
        .find_pipeline_for_commit(
            REPO,
            PipelineQuery::commit(&SHA.to_uppercase()),
            LONG,
            POLL,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(found.number, newest);
}

#[tokio::test]
async fn find_gives_up_when_no_pipeline_appears() {
    let (fake, client) = setup().await;
    fake.add_repo(REPO);
    let err = client
        .find_pipeline_for_commit(
            REPO,
            PipelineQuery::commit(SHA),
            Duration::from_millis(30),
            POLL,
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "pipeline_not_found");
    assert!(err.to_string().contains(SHA), "{err}");
    assert!(fake.requests().len() >= 2);
}

#[tokio::test]
async fn find_rejects_a_malformed_commit_without_a_request() {
    let (fake, client) = setup().await;
    for sha in ["", "abc", "not-a-sha-at-all", &"a".repeat(65)] {
        let err = client
            .find_pipeline_for_commit(
                REPO,
                PipelineQuery::commit(sha),
                LONG,
                POLL,
                &CancellationToken::new(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), "invalid_commit", "{sha:?}");
    }
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn wrong_token_is_unauthorized_at_once_and_never_shows_a_token() {
    let fake = FakeWoodpecker::start(TOKEN).await.unwrap();
    let wrong = "wrong-token-123456";
    let client = WoodpeckerClient::new(&fake.url(), SecretString::new(wrong)).unwrap();
    fake.add_pipeline(REPO, SHA, "main");
    let err = client
        .find_pipeline_for_commit(
            REPO,
            PipelineQuery::commit(SHA),
            LONG,
            POLL,
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "woodpecker_unauthorized");
    let WoodpeckerError::Http {
        method,
        path,
        status,
        body,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!((method.as_str(), status), ("GET", &401));
    assert_eq!(
        path,
        &format!("/api/repos/{REPO}/pipelines?page=1&perPage=50")
    );
    assert_eq!(body, "Unauthorized");
    for text in [err.to_string(), format!("{err:?}"), format!("{client:?}")] {
        assert!(!text.contains(wrong) && !text.contains(TOKEN), "{text}");
    }
    assert_eq!(fake.requests().len(), 1, "401 is not retried");
    assert!(!fake.requests()[0].authorized);
}

#[tokio::test]
async fn server_error_carries_method_path_status_and_redacted_body_snippet() {
    let (fake, client) = setup().await;
    fake.add_pipeline(REPO, SHA, "main");
    let long_body = format!("database is locked; token={TOKEN}; {}", "x".repeat(2000));
    fake.fail_next(1, 500, &long_body);
    let err = client.list_pipelines(REPO).await.unwrap_err();
    assert_eq!(err.code(), "woodpecker_http");
    assert!(err.is_transient());
    let WoodpeckerError::Http {
        method,
        path,
        status,
        body,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!((method.as_str(), *status), ("GET", 500));
    assert!(path.starts_with(&format!("/api/repos/{REPO}/pipelines")));
    assert!(
        body.starts_with("database is locked; token=[redacted];"),
        "{body}"
    );
    assert!(body.len() <= 520, "{}", body.len());
    let shown = err.to_string();
    assert!(
        shown.contains("GET /api/repos/7/pipelines") && shown.contains("500"),
        "{shown}"
    );
    assert!(!shown.contains(TOKEN));
}

#[tokio::test]
async fn follow_rides_out_a_transient_500() {
    let (fake, client) = setup().await;
    let n = fake.add_pipeline(REPO, SHA, "main");
    fake.fail_next(2, 500, "temporarily unavailable");
    fake.script(REPO, n, &["success"]);
    let out = client
        .follow(REPO, n, POLL, LONG, &CancellationToken::new())
        .await
        .unwrap();
    assert!(out.succeeded());
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test]
async fn follow_gives_up_after_repeated_500s() {
    let (fake, client) = setup().await;
    let n = fake.add_pipeline(REPO, SHA, "main");
    fake.fail_next(3, 500, "still broken");
    fake.script(REPO, n, &["success"]);
    let err = client
        .follow(REPO, n, POLL, LONG, &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, WoodpeckerError::Http { status: 500, .. }),
        "{err:?}"
    );
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test]
async fn follow_of_a_missing_pipeline_is_not_found_at_once() {
    let (fake, client) = setup().await;
    fake.add_repo(REPO);
    let err = client
        .follow(REPO, 42, POLL, LONG, &CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "woodpecker_not_found");
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn follow_times_out_while_the_pipeline_keeps_running() {
    let (fake, client) = setup().await;
    let n = fake.add_pipeline(REPO, SHA, "main");
    fake.set_status(REPO, n, "running");
    let err = client
        .follow(
            REPO,
            n,
            POLL,
            Duration::from_millis(40),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "pipeline_timeout");
    assert!(
        matches!(&err, WoodpeckerError::Timeout { last_status: PipelineStatus::Running, number, .. } if *number == n),
        "{err:?}"
    );
}

#[tokio::test]
async fn blocked_is_not_terminal() {
    let (fake, client) = setup().await;
    let n = fake.add_pipeline(REPO, SHA, "main");
    fake.script(REPO, n, &["blocked", "blocked", "declined"]);
    let out = client
        .follow(REPO, n, POLL, LONG, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(out.status(), &PipelineStatus::Declined);
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test]
async fn follow_stops_when_cancelled() {
    let (fake, client) = setup().await;
    let n = fake.add_pipeline(REPO, SHA, "main");
    fake.set_status(REPO, n, "running");
    let cancel = CancellationToken::new();
    let stopper = cancel.clone();
    let follow = tokio::spawn(async move { client.follow(REPO, n, POLL, LONG, &stopper).await });
    // Cancel once the client has polled at least twice, whatever the timing; a client that
    // stops polling fails here instead of hanging the suite.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while fake.requests().len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the client polled {} times in 10 s, expected at least 2",
            fake.requests().len()
        );
        tokio::task::yield_now().await;
    }
    cancel.cancel();
    let err = follow.await.unwrap().unwrap_err();
    assert_eq!(err.code(), "cancelled");
}

#[tokio::test]
async fn an_already_cancelled_token_sends_no_request() {
    let (fake, client) = setup().await;
    let n = fake.add_pipeline(REPO, SHA, "main");
    let cancel = CancellationToken::new();
    cancel.cancel();
    let err = client
        .follow(REPO, n, POLL, LONG, &cancel)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "cancelled");
    let err = client
        .find_pipeline_for_commit(REPO, PipelineQuery::commit(SHA), LONG, POLL, &cancel)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "cancelled");
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn a_body_that_is_not_the_expected_json_is_a_decode_error() {
    let (fake, client) = setup().await;
    fake.add_pipeline(REPO, SHA, "main");
    fake.fail_next(1, 200, "<html>login</html>");
    let err = client.pipeline(REPO, 1).await.unwrap_err();
    assert_eq!(err.code(), "woodpecker_bad_response");
    assert!(err.to_string().contains("<html>login</html>"), "{err}");
}

#[tokio::test]
async fn unreachable_server_is_a_transport_error() {
    // A port that was just free: nothing listens on it once the listener is dropped.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let client = WoodpeckerClient::new(&url, SecretString::new(TOKEN)).unwrap();
    let err = client.pipeline(REPO, 1).await.unwrap_err();
    assert_eq!(err.code(), "woodpecker_unreachable", "{err:?}");
    assert!(err.is_transient());
    assert!(
        err.to_string()
            .starts_with("GET /api/repos/7/pipelines/1 failed"),
        "{err}"
    );
}

#[test]
fn bad_base_urls_are_rejected() {
    for url in [
        "",
        "ci.example.com",
        "ftp://ci.example.com",
        "https://ci.example.com/?x=1",
    ] {
        let err = WoodpeckerClient::new(url, SecretString::new(TOKEN)).unwrap_err();
        assert_eq!(err.code(), "woodpecker_invalid_url", "{url:?}");
    }
}

#[tokio::test]
async fn deploy_url_comes_from_the_pattern_or_the_pipeline() {
    let (fake, client) = setup().await;
    let n = fake.add_pipeline(REPO, SHA, "main");
    fake.set_deploy_to(REPO, n, "https://preview-7.example.net/");
    let pipeline = client.pipeline(REPO, n).await.unwrap();
    let project = ProjectName::parse("my-site").unwrap();

    let url = deploy_url(
        &project,
        Some("https://{project}.example.com"),
        Some(&pipeline),
    )
    .unwrap();
    assert_eq!(url.as_deref(), Some("https://my-site.example.com"));
    let url = deploy_url(&project, Some("https://{project}.example.com"), None).unwrap();
    assert_eq!(url.as_deref(), Some("https://my-site.example.com"));
    let url = deploy_url(
        &project,
        Some("https://{short_commit}--{project}.pages.test/{number}"),
        Some(&pipeline),
    )
    .unwrap();
    assert_eq!(
        url.as_deref(),
        Some("https://3f2a9c1--my-site.pages.test/1")
    );

    let url = deploy_url(&project, None, Some(&pipeline)).unwrap();
    assert_eq!(url.as_deref(), Some("https://preview-7.example.net/"));
    let mut not_a_url = pipeline.clone();
    not_a_url.deploy_to = "production".into();
    assert_eq!(deploy_url(&project, None, Some(&not_a_url)).unwrap(), None);
    assert_eq!(deploy_url(&project, None, None).unwrap(), None);

    let err = deploy_url(&project, Some("https://x.test/{commit}"), None).unwrap_err();
    assert_eq!(err.code(), "deploy_url_needs_pipeline");
}

#[test]
fn deploy_url_patterns_are_checked() {
    assert!(validate_deploy_url_pattern("https://{project}.example.com").is_ok());
    assert!(validate_deploy_url_pattern("http://localhost:8080/{project}/{number}").is_ok());
    for bad in [
        "https://{name}.example.com",
        "https://{project.example.com",
        "https://}{project}.example.com",
        "{project}.example.com",
        "ftp://{project}.example.com",
        "",
    ] {
        let err = validate_deploy_url_pattern(bad).unwrap_err();
        assert_eq!(err.code(), "invalid_deploy_url_pattern", "{bad:?}");
    }
}

#[tokio::test]
async fn find_filters_by_branch_and_push_event_and_pages_until_found() {
    let (fake, client) = setup().await;
    let ours = fake.add_pipelines(REPO, &[NewPipeline::push(SHA, "main")])[0];
    // Newer than ours: 50 pushes of other commits to main (a full page), the same commit
    // pushed to another branch, and a manual run of it on main.
    let others: Vec<String> = (0..50).map(|i| format!("{i:040x}")).collect();
    let mut newer: Vec<NewPipeline<'_>> = others
        .iter()
        .map(|c| NewPipeline::push(c, "main"))
        .collect();
    newer.push(NewPipeline::push(SHA, "feature/x"));
    newer.push(NewPipeline {
        event: "manual",
        ..NewPipeline::push(SHA, "main")
    });
    fake.add_pipelines(REPO, &newer);
    let cancel = CancellationToken::new();
    let any = client
        .find_pipeline_for_commit(REPO, PipelineQuery::commit(SHA), LONG, POLL, &cancel)
        .await
        .unwrap();
    assert_eq!(
        any.event, "manual",
        "unfiltered, the newest run of the commit"
    );
    let before = fake.requests().len();
    let found = client
        .find_pipeline_for_commit(REPO, PipelineQuery::push(SHA, "main"), LONG, POLL, &cancel)
        .await
        .unwrap();
    assert_eq!(
        (found.number, found.event.as_str(), found.branch.as_str()),
        (ours, "push", "main")
    );
    let uris: Vec<String> = fake.requests()[before..]
        .iter()
        .map(|r| r.uri.clone())
        .collect();
    let page =
        |n: u32| format!("/api/repos/{REPO}/pipelines?page={n}&perPage=50&branch=main&event=push");
    assert_eq!(uris, [page(1), page(2)], "found on the second page");

    // A branch name is sent encoded; an event Woodpecker does not know is its 400.
    let err = client
        .find_pipeline_for_commit(
            REPO,
            PipelineQuery {
                event: Some("bogus"),
                ..PipelineQuery::push(SHA, "feature/x")
            },
            LONG,
            POLL,
            &cancel,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "woodpecker_http", "{err}");
    assert!(
        err.to_string().contains("branch=feature%2Fx&event=bogus"),
        "{err}"
    );
}

#[tokio::test]
async fn a_repository_is_looked_up_by_name_ignoring_case() {
    let (fake, client) = setup().await;
    fake.add_named_repo(12, "Acme/Site");
    let name = WoodpeckerRepo::parse("acme/site").unwrap();
    let repo = client.lookup_repo(&name).await.unwrap();
    assert_eq!(
        (repo.id, repo.full_name.as_str(), repo.active),
        (12, "Acme/Site", true)
    );
    assert_eq!(fake.requests()[0].uri, "/api/repos/lookup/acme/site");
    assert_eq!(client.repo_id(CiRepo::Name(&name)).await.unwrap(), 12);
    assert_eq!(client.repo_id(CiRepo::Id(5)).await.unwrap(), 5);
    let missing = WoodpeckerRepo::parse("acme/nothing").unwrap();
    let err = client.lookup_repo(&missing).await.unwrap_err();
    assert_eq!(err.code(), "woodpecker_not_found", "{err}");
    assert_eq!(
        client.pipeline_url(12, 3),
        format!("{}/repos/12/pipeline/3", fake.url())
    );
}
