//! Session conformance: the agent sessions completed builds reported, per project, as one
//! test body per behaviour on PostgreSQL and SQLite.

use std::time::Duration;

use rdev_core::{
    AgentRun, AgentSummary, BuildResult, Clock, NewTask, Project, ProjectStore, RetentionStore,
    SessionStore, TaskId, TaskStore, WorkQueue,
};

use crate::common::{project, TestDb};

rdev_testkit::both_backends!(
    a_completed_build_records_its_session_for_its_project_only,
    a_later_build_of_the_session_takes_it_over,
    results_without_a_resumable_session_record_nothing,
    sessions_go_with_their_project_and_their_task,
);

async fn create_project(t: &TestDb, name: &str) {
    let p: Project = serde_json::from_value(serde_json::json!({
        "name": name, "repo_url": format!("/srv/git/{name}.git")
    }))
    .unwrap();
    t.store.create_project(&p).await.unwrap();
}

fn with_session(provider: &str, session: Option<&str>) -> BuildResult {
    BuildResult {
        output: "done".into(),
        agent: AgentSummary {
            run: Some(AgentRun {
                provider: provider.into(),
                session_id: session.map(str::to_owned),
                num_turns: 1,
                usage: Default::default(),
                reported_cost_usd: None,
            }),
            pipeline: None,
        },
        ..BuildResult::default()
    }
}

/// Queues a build of `project`, claims it and completes it with `result`.
async fn complete_build(t: &TestDb, project_name: &str, result: BuildResult) -> TaskId {
    let task = NewTask::new(project(project_name), rdev_core::BuildSpec::new("go"));
    let id = t.store.create(task).await.unwrap().task.id;
    let lease = t
        .store
        .claim("w", 1, Duration::from_secs(30))
        .await
        .unwrap()
        .pop()
        .expect("the build is claimed");
    assert_eq!(lease.task.id, id);
    t.store.complete(&lease.key(), result).await.unwrap();
    id
}

async fn a_completed_build_records_its_session_for_its_project_only(t: TestDb) {
    create_project(&t, "site").await;
    create_project(&t, "other").await;
    let site = project("site");
    assert_eq!(t.store.project_session(&site, "s-1").await.unwrap(), None);
    let id = complete_build(&t, "site", with_session("claude-code", Some("s-1"))).await;
    let found = t
        .store
        .project_session(&site, "s-1")
        .await
        .unwrap()
        .expect("recorded with the completion");
    assert_eq!(
        (
            found.project,
            found.session_id.as_str(),
            found.provider.as_str(),
            found.task_id
        ),
        (site.clone(), "s-1", "claude-code", id)
    );
    assert_eq!(
        t.store
            .project_session(&project("other"), "s-1")
            .await
            .unwrap(),
        None,
        "another project's build never sees it"
    );
    assert_eq!(t.store.project_session(&site, "s-2").await.unwrap(), None);
}

async fn a_later_build_of_the_session_takes_it_over(t: TestDb) {
    create_project(&t, "site").await;
    let site = project("site");
    complete_build(&t, "site", with_session("opencode", Some("ses_a"))).await;
    let first = t
        .store
        .project_session(&site, "ses_a")
        .await
        .unwrap()
        .unwrap();
    t.clock.advance(Duration::from_secs(60));
    let later = complete_build(&t, "site", with_session("opencode", Some("ses_a"))).await;
    let now = t
        .store
        .project_session(&site, "ses_a")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.task_id, later, "points at the latest build");
    assert_eq!(now.created_at, first.created_at, "first reported then");
}

async fn results_without_a_resumable_session_record_nothing(t: TestDb) {
    create_project(&t, "site").await;
    let site = project("site");
    complete_build(&t, "site", with_session("claude-code", None)).await;
    complete_build(&t, "site", with_session("claude-code", Some("--resume"))).await;
    complete_build(&t, "site", BuildResult::default()).await;
    assert_eq!(
        t.store.project_session(&site, "--resume").await.unwrap(),
        None
    );
    // A build of a project that does not exist (any more) completes without a session row.
    complete_build(&t, "gone", with_session("claude-code", Some("s-9"))).await;
    assert_eq!(
        t.store
            .project_session(&project("gone"), "s-9")
            .await
            .unwrap(),
        None
    );
}

async fn sessions_go_with_their_project_and_their_task(t: TestDb) {
    create_project(&t, "site").await;
    create_project(&t, "old").await;
    complete_build(&t, "site", with_session("claude-code", Some("s-1"))).await;
    complete_build(&t, "old", with_session("claude-code", Some("s-2"))).await;
    t.store
        .delete_project(&project("site"), "test")
        .await
        .unwrap();
    assert_eq!(
        t.store
            .project_session(&project("site"), "s-1")
            .await
            .unwrap(),
        None
    );
    create_project(&t, "site").await;
    assert_eq!(
        t.store
            .project_session(&project("site"), "s-1")
            .await
            .unwrap(),
        None,
        "a project created again under the name is another project"
    );
    t.clock.advance(Duration::from_secs(3600));
    let report = t
        .store
        .prune_before(t.clock.now() + chrono::Duration::seconds(1), 10)
        .await
        .unwrap();
    assert!(report.tasks >= 1, "{report:?}");
    assert_eq!(
        t.store
            .project_session(&project("old"), "s-2")
            .await
            .unwrap(),
        None,
        "pruned with its task"
    );
}
