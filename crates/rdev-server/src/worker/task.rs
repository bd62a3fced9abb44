//! One build, start to end: workspace from the warm mirror, the template's first commit
//! for an empty repository, secrets, the agent run with its events stored, what it leaves
//! behind (commit, push and CI: [`super::publish`]), and the task's end with its callback
//! outbox row in one transaction. Every write is guarded by the lease; once the lease is
//! lost (cancel, expiry) the run stops and writes nothing more.

use std::sync::Arc;

use rdev_core::{
    AgentRequest, AgentRun, AgentStatus, AgentSummary, BuildResult, ErrorCode, Lease, LeaseKey,
    StoreError, WorkTask,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{
    build_ctx::Ctx,
    events, metering,
    outcome::{failed, BuildOutcome},
    publish,
};
use crate::{
    git::{GitEnv, Workspace},
    project_service::render_initial_commit,
    services::Services,
};

/// Runs the task of `lease` and records its end, inside a span naming the task.
pub async fn run(deps: &Services, lease: Lease, stop: CancellationToken) {
    use tracing::Instrument;
    let span = tracing::info_span!(
        "task",
        task_id = %lease.task.id,
        project = %lease.task.project,
        attempt = lease.task.attempt
    );
    run_and_record(deps, lease, stop).instrument(span).await;
}

async fn run_and_record(deps: &Services, lease: Lease, stop: CancellationToken) {
    let key = lease.key();
    let task = lease.task;
    let started = std::time::Instant::now();
    let outcome = build(deps, &task, key, &stop).await;
    let store = &deps.store;
    let seconds = started.elapsed().as_secs_f64();
    let (label, provider, cost) = match &outcome {
        BuildOutcome::Completed(r) => (
            "completed",
            r.agent.run.as_ref().map(|a| a.provider.clone()),
            r.cost_usd,
        ),
        BuildOutcome::Failed { .. } => ("failed", None, None),
        BuildOutcome::FailedWithResult { result: r, .. } => (
            "failed",
            r.agent.run.as_ref().map(|a| a.provider.clone()),
            r.cost_usd,
        ),
        BuildOutcome::Stopped => ("stopped", None, None),
    };
    deps.metrics
        .build_finished(label, seconds, provider.as_deref(), cost);
    let written = match outcome {
        BuildOutcome::Completed(mut result) => {
            result.duration_ms = Some(started.elapsed().as_millis() as u64);
            store.complete(&key, result).await.map(|_| "completed")
        }
        BuildOutcome::Failed { error, retryable } => {
            tracing::warn!(%error, retryable, "build failed");
            store.fail(&key, &error, retryable).await.map(|o| match o {
                rdev_core::FailOutcome::Retrying { .. } => "retrying",
                rdev_core::FailOutcome::Dead => "failed",
            })
        }
        BuildOutcome::FailedWithResult { error, mut result } => {
            tracing::warn!(%error, "build failed after pushing");
            result.duration_ms = Some(started.elapsed().as_millis() as u64);
            store
                .fail_with_result(&key, &error, result)
                .await
                .map(|_| "failed")
        }
        BuildOutcome::Stopped => Ok("stopped"),
    };
    match written {
        Ok(state) => tracing::info!(
            state,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "build finished"
        ),
        Err(StoreError::LeaseLost { .. }) => tracing::warn!(
            "lease lost before the result was written; another attempt owns the task"
        ),
        Err(e) => {
            tracing::error!(error = %e, "could not record the build's end; the lease will expire and the task retry")
        }
    }
}

async fn build(
    deps: &Services,
    task: &WorkTask,
    key: LeaseKey,
    stop: &CancellationToken,
) -> BuildOutcome {
    let project = match deps.store.get_project(&task.project).await {
        Ok(p) => p,
        Err(StoreError::NotFound { .. }) => {
            return failed(format!("project {} no longer exists", task.project), false)
        }
        Err(e) => return failed(e, true),
    };
    let cx = Ctx {
        deps,
        task,
        key,
        project,
        stop,
    };
    cx.note(
        "progress",
        json!({"step": "prepare", "attempt": task.attempt}),
    )
    .await;
    let injection = match deps
        .secrets
        .inject(
            &cx.project.name,
            &cx.project.secrets,
            cx.project.repo_url.as_str(),
            &format!("task:{}", task.id),
        )
        .await
    {
        Ok(i) => i,
        Err(e) => return failed(format!("could not load the project's secrets: {e}"), false),
    };
    let redactor = injection.redactor.clone();
    let git_env = GitEnv(injection.git_env.clone());
    let ws = match deps
        .git
        .prepare(
            &cx.project.name,
            cx.project.repo_url.as_str(),
            cx.project.default_branch.as_str(),
            task.id,
            &git_env,
        )
        .await
    {
        Ok(ws) => ws,
        Err(e) => {
            return failed(
                redactor.redact(&format!("could not prepare the workspace: {e}")),
                true,
            )
        }
    };
    // Named now, while the worktree is the directory rdev made: the agent could replace it
    // (with a symlink elsewhere, say) before the state is removed.
    let agent_state = deps.registry.workdir_state(&ws.dir);
    let outcome = build_in(&cx, &ws, &injection).await;
    // A failed attempt's checkout and agent state stay for debugging; the housekeeping
    // sweep removes them after `keep_failed_workspaces_hours`.
    let failed_build = matches!(
        outcome,
        BuildOutcome::Failed { .. } | BuildOutcome::FailedWithResult { .. }
    );
    if failed_build && deps.config.keep_failed_workspaces_hours > 0 {
        deps.git.keep(ws, agent_state).await;
    } else {
        deps.git.remove_with(ws, agent_state);
    }
    match outcome {
        BuildOutcome::Failed { error, retryable } => BuildOutcome::Failed {
            error: redactor.redact(&error),
            retryable,
        },
        BuildOutcome::Completed(r) => BuildOutcome::Completed(r.redacted(&redactor)),
        BuildOutcome::FailedWithResult { error, result } => BuildOutcome::FailedWithResult {
            error: redactor.redact(&error),
            result: result.redacted(&redactor),
        },
        other => other,
    }
}

async fn build_in(
    cx: &Ctx<'_>,
    ws: &Workspace,
    injection: &crate::secrets::Injection,
) -> BuildOutcome {
    let (deps, task, spec) = (cx.deps, cx.task, &cx.task.spec);
    // A retried attempt whose work already reached the remote must not run or push again.
    if task.attempt > 1 {
        if let Some(outcome) = publish::already_pushed(cx, ws).await {
            return outcome;
        }
    }

    let mut initial = None;
    if ws.is_empty {
        if let Some(template) = spec.template.as_deref().or(cx.project.template.as_deref()) {
            cx.note(
                "progress",
                json!({"step": "render_template", "template": template}),
            )
            .await;
            match render_initial_commit(
                ws,
                &deps.templates,
                template,
                &spec.variables,
                &deps.config.author(),
                Some(task.id),
            )
            .await
            {
                Ok(sha) => initial = sha,
                Err(e) => {
                    return failed(format!("could not render template {template}: {e}"), false)
                }
            }
        }
    }

    let provider = spec.provider.as_ref().or(cx.project.provider.as_ref());
    let agent = match deps.registry.resolve(provider.map(|p| p.as_str())) {
        Ok(a) => a,
        Err(e) => return failed(e, false),
    };
    // The API checked this node's view; credentials may have gone since (another node's
    // configuration, a restart): fail with the API's code, not the agent CLI's words.
    let configured =
        crate::doctor::credentials::check_configured(&deps.config, agent.provider().as_str());
    if let Err(e) = configured {
        return failed(format!("{}: {e}", e.code()), false);
    }
    let mut request = AgentRequest::new(spec.prompt.clone(), ws.dir.clone(), spec.timeout());
    request.read_only_paths = ws.agent_read_only_paths();
    request.model = spec.model.clone();
    request.session_id = spec.session_id.clone();
    request.session_dir = Some(crate::sessions::session_dir(
        &deps.config.data_dir,
        &cx.project.name,
        agent.provider().as_str(),
    ));
    request.env = injection.env.iter().cloned().collect();
    cx.note(
        "progress",
        json!({"step": "agent", "provider": agent.provider()}),
    )
    .await;

    // The agent's model key: valid while this attempt runs, within the task's budget.
    let provider_id = agent.provider();
    let grant = match metering::grant(
        deps.store.as_ref(),
        &deps.gateway,
        task,
        &cx.project,
        provider_id.as_str(),
    )
    .await
    {
        Ok(g) => g,
        Err(e) => return failed(e, true),
    };
    request.model_grant = Some(grant.model_grant());
    if !cx.project.network_allow.is_empty() && !agent.capabilities().network_allow {
        // Fails closed, and says so.
        cx.note(
            "egress",
            json!({"outcome": "not_applied", "allow": cx.project.network_allow,
                   "provider": provider_id,
                   "detail": "the project's network_allow does not reach this agent's runs: \
                              they reach nothing but the model, or what their pod allows \
                              (docs/gateway.md)"}),
        )
        .await;
    }
    // The attempt's gateway token must never be committed either (push protection).
    let injection = &injection.with_value("gateway token", grant.token().clone());
    let (sink, forwarder) =
        events::forward(Arc::clone(&deps.store), task.id, injection.redactor.clone());
    let run_id = request.run_id;
    let exec = agent.execute(request, sink);
    tokio::pin!(exec);
    let result = tokio::select! {
        r = &mut exec => r,
        _ = grant.exhausted() => {
            // The gateway refuses the agent's calls from now on; stop it rather than let
            // it run on without a model.
            let _ = agent.cancel(run_id).await;
            let _ = exec.await;
            let _ = forwarder.await;
            return metering::budget_exceeded(&grant);
        }
        _ = cx.stop.cancelled() => {
            let _ = agent.cancel(run_id).await;
            let _ = exec.await;
            let _ = forwarder.await;
            return BuildOutcome::Stopped;
        }
    };
    let _ = forwarder.await;
    if metering::exhausted_after_run(&grant).await {
        return metering::budget_exceeded(&grant);
    }
    drop(grant);
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            let retryable = matches!(
                e.code(),
                "agent_unavailable" | "agent_io_error" | "agent_spawn_failed"
            );
            return failed(format!("agent error ({}): {e}", e.code()), retryable);
        }
    };
    if cx.stop.is_cancelled() {
        return BuildOutcome::Stopped;
    }
    let metered = metering::task_usage(deps.store.as_ref(), task).await;
    match result.status {
        AgentStatus::Success => {}
        AgentStatus::TimedOut => {
            return failed(
                format!("agent timed out after {}s", spec.timeout().as_secs()),
                false,
            )
        }
        AgentStatus::Cancelled => return BuildOutcome::Stopped,
        AgentStatus::Failed => return failed(format!("agent failed: {}", result.output), false),
    }
    // What the gateway metered is the task's cost; the agent's own estimate stays in
    // `agent` (and is the cost when nothing went through the gateway).
    let done = BuildResult {
        output: result.output,
        cost_usd: metered
            .as_ref()
            .map(|u| u.total.cost_usd)
            .or(result.cost_usd),
        agent: AgentSummary {
            run: Some(AgentRun {
                provider: agent.provider().to_string(),
                session_id: result.session_id,
                num_turns: result.num_turns,
                usage: result.usage,
                reported_cost_usd: metered.is_some().then_some(result.cost_usd),
            }),
            pipeline: None,
        },
        usage: metered,
        ..BuildResult::default()
    };
    publish::publish(cx, ws, injection, initial, done).await
}
