//! One build, start to end: workspace from the warm mirror, the template's first commit
//! for an empty repository, secrets, the agent run with its events stored, commit and
//! (lease-checked, idempotent) push, the Woodpecker pipeline, and the task's completion
//! with its callback outbox row in one transaction. Every write is guarded by the lease;
//! once the lease is lost (cancel, expiry) the run stops and writes nothing more.

use std::sync::Arc;

use rdev_core::{
    AgentRequest, AgentRun, AgentStatus, AgentSummary, Artifacts, BuildResult, ErrorCode, Lease,
    LeaseKey, PipelineSummary, Project, StoreError, WorkTask,
};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::{
    events, metering,
    outcome::{failed, BuildOutcome},
    push_protection::{self, Verdict},
};
use crate::{
    git::{GitEnv, Workspace},
    project_service::render_initial_commit,
    services::Services,
    woodpecker::deploy_url,
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

/// What one build works with.
struct Ctx<'a> {
    deps: &'a Services,
    task: &'a WorkTask,
    key: LeaseKey,
    project: Project,
    stop: &'a CancellationToken,
}

impl Ctx<'_> {
    async fn note(&self, kind: &str, payload: Value) {
        events::note(self.deps.store.as_ref(), self.task.id, kind, payload).await;
    }

    /// Whether the lease is still ours, checked with a heartbeat right now (before a push).
    async fn still_held(&self) -> bool {
        if self.stop.is_cancelled() {
            return false;
        }
        let lease = self.deps.config.worker_lease();
        match self
            .deps
            .store
            .heartbeat(std::slice::from_ref(&self.key), lease)
            .await
        {
            Ok(o) => o.lost.is_empty(),
            Err(_) => false,
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
    if matches!(outcome, BuildOutcome::Failed { .. })
        && deps.config.keep_failed_workspaces_hours > 0
    {
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
    if spec.auto_deploy && task.attempt > 1 {
        match ws.find_task_commit_on_remote(task.id).await {
            Ok(Some(sha)) => {
                cx.note(
                    "progress",
                    json!({"step": "already_pushed", "commit_sha": sha}),
                )
                .await;
                let output =
                    "an earlier attempt already pushed this task's commit; it was not pushed again";
                let done = BuildResult {
                    output: output.to_owned(),
                    ..BuildResult::default()
                };
                return deploy(cx, sha, done).await;
            }
            Ok(None) => {}
            Err(e) => return failed(format!("could not inspect the remote: {e}"), true),
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
    let mut done = BuildResult {
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
    if !spec.auto_deploy {
        return BuildOutcome::Completed(done);
    }

    let commit = match ws
        .commit_all(
            &commit_message(&spec.prompt),
            Some(task.id),
            &deps.config.author(),
        )
        .await
    {
        Ok(c) => c,
        Err(e) => return failed(format!("could not commit: {e}"), true),
    };
    let Some(sha) = commit.or(initial) else {
        done.output = format!(
            "{}\n\n(no changes: nothing was committed or pushed)",
            done.output
        );
        return BuildOutcome::Completed(done);
    };
    // Push protection: a commit that carries a secret is never pushed (docs/security.md).
    let warned = match push_protection::check(deps, task.id, &cx.project, ws, injection).await {
        Verdict::Push(warned) => warned,
        Verdict::Stop { error, retryable } => return failed(error, retryable),
    };
    // The push is the one effect that cannot be taken back: only a lease holder pushes.
    if !cx.still_held().await {
        return BuildOutcome::Stopped;
    }
    cx.note("progress", json!({"step": "push", "commit_sha": sha}))
        .await;
    if let Err(e) = ws.push().await {
        return failed(format!("push failed: {e}"), true);
    }
    let mut outcome = deploy(cx, sha, done).await;
    if let (BuildOutcome::Completed(r), Some(warned)) = (&mut outcome, warned) {
        r.push_protection = Some(warned);
    }
    outcome
}

/// After the push: follow Woodpecker when configured, derive the deploy URL, complete
/// `done` with them.
async fn deploy(cx: &Ctx<'_>, sha: String, mut done: BuildResult) -> BuildOutcome {
    let mut pipeline = None;
    if let (Some(wp), Some(repo_id)) = (&cx.deps.woodpecker, cx.project.woodpecker_repo_id) {
        cx.note("progress", json!({"step": "ci", "commit_sha": sha}))
            .await;
        let found = match wp
            .client
            .find_pipeline_for_commit(repo_id, &sha, wp.appear_timeout, wp.poll, cx.stop)
            .await
        {
            Ok(p) => p,
            Err(e) if cx.stop.is_cancelled() => {
                let _ = e;
                return BuildOutcome::Stopped;
            }
            Err(e) => return failed(format!("CI: {e}"), false),
        };
        let outcome = match wp
            .client
            .follow(repo_id, found.number, wp.poll, wp.pipeline_timeout, cx.stop)
            .await
        {
            Ok(o) => o,
            Err(_) if cx.stop.is_cancelled() => return BuildOutcome::Stopped,
            Err(e) => return failed(format!("CI pipeline #{}: {e}", found.number), false),
        };
        cx.note("progress", json!({"step": "ci_finished", "pipeline": outcome.pipeline.number, "status": outcome.status().as_str()})).await;
        if !outcome.succeeded() {
            return failed(
                format!(
                    "CI pipeline #{} ended with status {}",
                    outcome.pipeline.number,
                    outcome.status().as_str()
                ),
                false,
            );
        }
        pipeline = Some(outcome.pipeline);
    }
    let url = match deploy_url(
        &cx.project.name,
        cx.project.deploy_url_pattern.as_deref(),
        pipeline.as_ref(),
    ) {
        Ok(u) => u,
        Err(e) => return failed(format!("deploy URL: {e}"), false),
    };
    done.agent.pipeline = pipeline.map(|p| PipelineSummary {
        number: p.number,
        status: p.status.as_str().to_owned(),
    });
    done.artifacts = Artifacts {
        commit_sha: Some(sha),
        deploy_url: url,
    };
    BuildOutcome::Completed(done)
}

/// The commit subject: the prompt's first line, shortened.
fn commit_message(prompt: &str) -> String {
    let first = prompt
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("rdev build");
    let mut subject: String = first.chars().take(72).collect();
    if first.chars().count() > 72 {
        subject.push('…');
    }
    format!(
        "{subject}\n\nBuilt by rdev from the prompt:\n\n{}",
        prompt.trim()
    )
}

#[cfg(test)]
mod tests {
    use super::commit_message;

    #[test]
    fn commit_subject_is_the_first_prompt_line_shortened() {
        let m = commit_message("\n  Add a pricing page with three tiers\nand a FAQ");
        assert!(m.starts_with("Add a pricing page with three tiers\n\n"));
        let long = "x".repeat(100);
        assert_eq!(
            commit_message(&long)
                .lines()
                .next()
                .unwrap()
                .chars()
                .count(),
            73
        );
    }
}
