//! Usage conformance: model usage per task, attempt and model, and a project's gateway
//! settings, as one test body per behaviour on PostgreSQL and SQLite.

use std::time::Duration;

use rdev_core::{
    AttemptUsage, Clock, MeteredUsage, Project, ProjectStore, RetentionStore, TaskStore,
    UsageStore, UsageTotal, WorkQueue,
};

use crate::common::{self, task, TestDb};

rdev_testkit::both_backends!(
    usage_adds_up_per_attempt_and_model_and_reads_back_in_order,
    concurrent_usage_records_of_one_row_lose_nothing,
    usage_goes_with_its_task,
    project_gateway_settings_round_trip,
);

fn usage(model: &str, input: u64, output: u64, cost: f64) -> AttemptUsage {
    AttemptUsage {
        attempt: 0,
        provider: "claude-code".into(),
        model: model.into(),
        usage: MeteredUsage {
            input_tokens: input,
            output_tokens: output,
            cache_read_input_tokens: 3,
            cache_creation_input_tokens: 2,
            cache_creation_1h_input_tokens: 1,
        },
        cost_usd: cost,
        calls: 1,
    }
}

async fn usage_adds_up_per_attempt_and_model_and_reads_back_in_order(t: TestDb) {
    let id = t.store.create(task("a")).await.unwrap().task.id;
    assert!(t.store.task_usage(id).await.unwrap().is_empty());
    for (attempt, row) in [
        (2, usage("sonnet", 10, 20, 0.5)),
        (1, usage("sonnet", 1, 2, 0.25)),
        (1, usage("haiku", 5, 5, 0.125)),
        (1, usage("sonnet", 100, 200, 1.0)),
    ] {
        t.store.record_usage(id, attempt, &row).await.unwrap();
    }
    let rows = t.store.task_usage(id).await.unwrap();
    let keys: Vec<(u32, &str)> = rows.iter().map(|r| (r.attempt, r.model.as_str())).collect();
    assert_eq!(keys, [(1, "haiku"), (1, "sonnet"), (2, "sonnet")]);
    let sonnet = &rows[1];
    assert_eq!(sonnet.usage.input_tokens, 101);
    assert_eq!(sonnet.usage.output_tokens, 202);
    assert_eq!(sonnet.usage.cache_read_input_tokens, 6);
    assert_eq!(sonnet.usage.cache_creation_input_tokens, 4);
    assert_eq!(sonnet.usage.cache_creation_1h_input_tokens, 2);
    assert_eq!(sonnet.calls, 2);
    assert!((sonnet.cost_usd - 1.25).abs() < 1e-9);
    assert_eq!(sonnet.provider, "claude-code");
    let total = UsageTotal::of(&rows);
    assert_eq!(total.calls, 4);
    assert_eq!(total.usage.input_tokens, 116);
    assert!((total.cost_usd - 1.875).abs() < 1e-9);
}

async fn concurrent_usage_records_of_one_row_lose_nothing(t: TestDb) {
    let id = t.store.create(task("a")).await.unwrap().task.id;
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let store = t.store.clone();
        writers.spawn(async move {
            store
                .record_usage(id, 1, &usage("sonnet", 1, 1, 0.5))
                .await
                .unwrap()
        });
    }
    while writers.join_next().await.is_some() {}
    let rows = t.store.task_usage(id).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].calls, 20);
    assert_eq!(rows[0].usage.input_tokens, 20);
    assert!((rows[0].cost_usd - 10.0).abs() < 1e-9);
}

async fn usage_goes_with_its_task(t: TestDb) {
    let id = t.store.create(task("a")).await.unwrap().task.id;
    let lease = t
        .store
        .claim("w", 1, Duration::from_secs(30))
        .await
        .unwrap()
        .pop()
        .unwrap();
    t.store
        .record_usage(id, 1, &usage("sonnet", 1, 1, 0.1))
        .await
        .unwrap();
    t.store
        .complete(&lease.key(), common::result(""))
        .await
        .unwrap();
    t.clock.advance(Duration::from_secs(3600));
    let report = t
        .store
        .prune_before(t.clock.now() + chrono::Duration::seconds(1), 10)
        .await
        .unwrap();
    assert_eq!(report.tasks, 1, "{report:?}");
    assert!(t.store.task_usage(id).await.unwrap().is_empty());
}

async fn project_gateway_settings_round_trip(t: TestDb) {
    let mut p: Project = serde_json::from_value(serde_json::json!({
        "name": "site", "repo_url": "/srv/git/site.git",
        "network_allow": ["registry.npmjs.org:443"], "max_cost_usd": 2.5, "max_tokens": 100000
    }))
    .unwrap();
    t.store.create_project(&p).await.unwrap();
    assert_eq!(t.store.get_project(&p.name).await.unwrap(), p);
    p.network_allow.clear();
    p.max_cost_usd = None;
    p.max_tokens = Some(7);
    t.store.update_project(&p).await.unwrap();
    let back = t.store.get_project(&p.name).await.unwrap();
    assert_eq!(back, p);
    assert!(back.network_allow.is_empty() && back.max_cost_usd.is_none());
}
