//! Store test support: the tasks and project names the suites use. The database per test
//! (`TestDb`, on either backend) and the macro running a body on both come from
//! `rdev_testkit::db`.

#![allow(dead_code)]

use rdev_core::{BuildResult, BuildSpec, NewTask, Project, ProjectName, ProjectStore};
pub use rdev_testkit::db::{test_store_config as test_config, TestDb};

/// Lets project `site` run up to 64 builds at once, for tests of the queue's other rules
/// that hold several of its tasks together (by default a project runs one at a time).
pub async fn parallel_site(store: &rdev_store::SqlStore) {
    let site: Project = serde_json::from_value(serde_json::json!({
        "name": "site", "repo_url": "/srv/git/site.git", "max_parallel_builds": 64,
    }))
    .unwrap();
    store.create_project(&site).await.unwrap();
}

/// A project name for tests.
pub fn project(name: &str) -> ProjectName {
    ProjectName::parse(name).unwrap()
}

/// A task in project `site` with `prompt`.
pub fn task(prompt: &str) -> NewTask {
    NewTask::new(project("site"), BuildSpec::new(prompt))
}

/// A build result with `output`, the rest unset.
pub fn result(output: &str) -> BuildResult {
    BuildResult {
        output: output.to_owned(),
        ..BuildResult::default()
    }
}

/// A task whose spec asks for a callback.
pub fn task_with_callback(prompt: &str) -> NewTask {
    let mut t = task(prompt);
    t.spec.callback_url = Some("https://bot.example/callback".into());
    t
}
