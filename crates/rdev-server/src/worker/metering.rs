//! An attempt's side of the model gateway: the grant minted when the agent starts (its
//! budget is the smallest of the build's, the project's and the server's limits, less what
//! earlier attempts spent; its egress allow-list is the project's), the `budget_exceeded`
//! failure when the gateway says the budget is used up, and the usage the result reports
//! (read back from the store, so it covers every attempt of the task). It decides nothing
//! about the agent's own outcome.

use std::time::Duration;

use rdev_core::{
    project_model::parse_network_allow, AttemptUsage, Project, Store, TaskUsage, UsageTotal,
    WorkTask,
};

use super::outcome::BuildOutcome;
use crate::gateway::{Gateway, Grant, GrantSpec, Spend};

/// How long the end of a run waits for its last model call's usage to be read and stored.
const SETTLE_WAIT: Duration = Duration::from_secs(5);

/// Mints the grant of `task`'s current attempt.
pub async fn grant(
    store: &dyn Store,
    gateway: &Gateway,
    task: &WorkTask,
    project: &Project,
    provider: &str,
) -> Result<Grant, String> {
    let earlier = store
        .task_usage(task.id)
        .await
        .map_err(|e| format!("could not read the task's earlier usage: {e}"))?;
    let prior = UsageTotal::of(&earlier);
    let budget = task
        .spec
        .budget()
        .tightest(project.budget())
        .tightest(gateway.cap());
    Ok(gateway.grant(GrantSpec {
        task: Some(task.id),
        attempt: task.attempt,
        project: project.name.to_string(),
        provider: provider.to_owned(),
        budget,
        prior: Spend {
            cost_usd: prior.cost_usd,
            tokens: prior.usage.total_tokens(),
        },
        // Entries were checked when the project was saved; one that no longer parses
        // (a rule added since) allows nothing.
        network_allow: project
            .network_allow
            .iter()
            .filter_map(|e| parse_network_allow(e).ok())
            .collect(),
    }))
}

/// Waits for the attempt's model calls to be settled; `true` when its budget is used up.
pub async fn exhausted_after_run(grant: &Grant) -> bool {
    if !grant.state().wait_settled(SETTLE_WAIT).await {
        tracing::warn!("a model call was still unsettled when the run ended");
    }
    grant.state().is_exhausted()
}

/// The failure of an attempt whose budget is used up: not retried, nothing pushed.
pub fn budget_exceeded(grant: &Grant) -> BuildOutcome {
    let spent = grant.state().spent();
    let budget = grant.state().spec.budget;
    let limits: Vec<String> = budget
        .max_cost_usd
        .map(|c| format!("max_cost_usd {c}"))
        .into_iter()
        .chain(budget.max_tokens.map(|t| format!("max_tokens {t}")))
        .collect();
    BuildOutcome::Failed {
        error: format!(
            "budget_exceeded: the task's model calls used ${:.4} and {} tokens, reaching its \
             budget ({}); the agent was stopped and nothing was pushed",
            spent.cost_usd,
            spent.tokens,
            limits.join(", ")
        ),
        retryable: false,
    }
}

/// The task's metered usage for its result: totals over every attempt, and per attempt and
/// model. `None` when nothing was metered (an agent that does not use the gateway).
pub async fn task_usage(store: &dyn Store, task: &WorkTask) -> Option<TaskUsage> {
    let rows: Vec<AttemptUsage> = match store.task_usage(task.id).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the task's usage");
            return None;
        }
    };
    if rows.is_empty() {
        return None;
    }
    Some(TaskUsage::of(rows))
}
