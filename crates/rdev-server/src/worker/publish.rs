//! After the agent: what a build leaves behind. Its changes are committed with the
//! `Rdev-Task` trailer, scanned by push protection and pushed (only while the lease is
//! held): to the project's default branch with `auto_deploy`, else to the task's own branch
//! `rdev/<task id>`, never the default branch. A deployed commit's Woodpecker pipeline is
//! followed (the repository by id or looked up by name; the pipeline matched by branch and
//! push event) and the deploy URL derived. A failure after the push keeps what was pushed
//! in the task's result ([`BuildOutcome::FailedWithResult`]). A push to the default branch
//! refused because it moved is replayed onto its new head ([`super::landing`]). A retried
//! attempt that finds its commit on its branch pushes nothing and goes on from there.
//!
//! It must not run the agent nor write the task's end: `worker/task.rs` does both.

use rdev_core::{BuildResult, CiRepo, PipelineReport, PipelineSummary};
use serde_json::json;

use super::{
    build_ctx::{task_branch, Ctx},
    landing::{self, Landed},
    outcome::{failed, BuildOutcome},
    push_protection::{self, Verdict},
};
use crate::{
    git::Workspace,
    secrets::Injection,
    woodpecker::{deploy_url, CiFollow, Pipeline, PipelineQuery, WoodpeckerError},
};

/// Where a build's commit goes.
enum Target {
    /// The project's default branch, then CI and the deploy URL (`auto_deploy`).
    Deploy(String),
    /// The task's own branch; nothing is deployed.
    TaskBranch(String),
}

impl Target {
    fn of(cx: &Ctx<'_>) -> Self {
        if cx.task.spec.auto_deploy {
            Self::Deploy(cx.project.default_branch.as_str().to_owned())
        } else {
            Self::TaskBranch(task_branch(cx.task.id))
        }
    }

    fn branch(&self) -> &str {
        match self {
            Self::Deploy(b) | Self::TaskBranch(b) => b,
        }
    }
}

/// For a retried attempt: the end of the build when an earlier attempt already pushed the
/// task's commit to its branch (nothing runs or is pushed again); `None` to build.
pub(super) async fn already_pushed(cx: &Ctx<'_>, ws: &Workspace) -> Option<BuildOutcome> {
    let target = Target::of(cx);
    match ws.find_task_commit_on(cx.task.id, target.branch()).await {
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
            Some(after_push(cx, &target, sha, done).await)
        }
        Ok(None) if matches!(target, Target::Deploy(_)) => {
            // An earlier attempt whose commit could not land kept it on the task's branch.
            match ws
                .find_task_commit_on(cx.task.id, &task_branch(cx.task.id))
                .await
            {
                Ok(Some(sha)) => {
                    let done = BuildResult {
                        output: "an earlier attempt could not land this task's commit on the \
                                 branch and kept it on the task's branch"
                            .to_owned(),
                        ..BuildResult::default()
                    };
                    let why = "found by a retried attempt";
                    Some(landing::conflict_result(cx, sha, why, done))
                }
                Ok(None) => None,
                Err(e) => Some(failed(format!("could not inspect the remote: {e}"), true)),
            }
        }
        Ok(None) => None,
        Err(e) => Some(failed(format!("could not inspect the remote: {e}"), true)),
    }
}

/// Commits the agent's work (or pushes the template's first commit `initial`), pushes it
/// to its branch and completes `done` with what happened.
pub(super) async fn publish(
    cx: &Ctx<'_>,
    ws: &Workspace,
    injection: &Injection,
    initial: Option<String>,
    mut done: BuildResult,
) -> BuildOutcome {
    let (deps, task) = (cx.deps, cx.task);
    let target = Target::of(cx);
    let commit = match ws
        .commit_all(
            &commit_message(&task.spec.prompt),
            Some(task.id),
            &deps.config.author(),
        )
        .await
    {
        Ok(c) => c,
        Err(e) => return failed(format!("could not commit: {e}"), true),
    };
    let Some(sha) = commit.or(initial) else {
        if task.spec.auto_deploy {
            done.output = format!(
                "{}\n\n(no changes: nothing was committed or pushed)",
                done.output
            );
        }
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
    cx.note(
        "progress",
        json!({"step": "push", "commit_sha": sha, "branch": target.branch()}),
    )
    .await;
    let mut outcome = match &target {
        Target::Deploy(branch) => match landing::push_or_rebase(cx, ws, &sha, branch).await {
            Landed::Pushed(landed) => after_push(cx, &target, landed, done).await,
            Landed::Conflict(why) => landing::conflict(cx, ws, sha, &why, done).await,
            Landed::Stopped => BuildOutcome::Stopped,
            Landed::Failed(e) => failed(format!("push failed: {e}"), true),
        },
        Target::TaskBranch(branch) => match ws.push_commit(&sha, branch).await {
            Ok(()) => after_push(cx, &target, sha, done).await,
            Err(e) => failed(format!("push failed: {e}"), true),
        },
    };
    if let (
        BuildOutcome::Completed(r) | BuildOutcome::FailedWithResult { result: r, .. },
        Some(warned),
    ) = (&mut outcome, warned)
    {
        r.push_protection = Some(warned);
    }
    outcome
}

/// After the push of `sha`: a task branch is named in the result; a deployed commit's CI
/// is followed and its deploy URL derived.
async fn after_push(
    cx: &Ctx<'_>,
    target: &Target,
    sha: String,
    mut done: BuildResult,
) -> BuildOutcome {
    done.artifacts.commit_sha = Some(sha.clone());
    match target {
        Target::TaskBranch(branch) => {
            done.artifacts.branch = Some(branch.clone());
            BuildOutcome::Completed(done)
        }
        Target::Deploy(_) => deploy(cx, &sha, done).await,
    }
}

/// Follows Woodpecker when configured, derives the deploy URL and completes `done` with
/// them; a failure keeps `done` (the pushed commit, the pipeline) as the failed task's
/// result.
async fn deploy(cx: &Ctx<'_>, sha: &str, mut done: BuildResult) -> BuildOutcome {
    let mut pipeline = None;
    if let (Some(wp), Some(repo)) = (&cx.deps.woodpecker, cx.project.ci_repo()) {
        match follow_ci(cx, wp, repo, sha).await {
            Ok((passed, report)) => {
                record_pipeline(&mut done, Some(report));
                pipeline = Some(passed);
            }
            Err(CiFailure::Stopped) => return BuildOutcome::Stopped,
            Err(CiFailure::Failed { error, pipeline }) => {
                record_pipeline(&mut done, pipeline);
                return BuildOutcome::FailedWithResult {
                    error,
                    result: done,
                };
            }
        }
    }
    match deploy_url(
        &cx.project.name,
        cx.project.deploy_url_pattern.as_deref(),
        pipeline.as_ref(),
    ) {
        Ok(url) => {
            done.artifacts.deploy_url = url;
            BuildOutcome::Completed(done)
        }
        Err(e) => BuildOutcome::FailedWithResult {
            error: format!("deploy URL: {e}"),
            result: done,
        },
    }
}

/// Puts the pipeline in the result: the top-level `pipeline` with its web page, and the
/// older `agent.pipeline` (number and status) that clients may still read.
fn record_pipeline(done: &mut BuildResult, report: Option<PipelineReport>) {
    done.agent.pipeline = report.as_ref().map(|r| PipelineSummary {
        number: r.number,
        status: r.status.clone(),
    });
    done.pipeline = report;
}

/// Why following CI did not end in a passed pipeline.
enum CiFailure {
    /// The lease is gone: write nothing.
    Stopped,
    /// CI did not pass: why, and the pipeline when one was found.
    Failed {
        error: String,
        pipeline: Option<PipelineReport>,
    },
}

/// Finds the pipeline the push of `sha` to the default branch started in `repo` and
/// follows it to its end; a passed pipeline and its report, or why not.
async fn follow_ci(
    cx: &Ctx<'_>,
    wp: &CiFollow,
    repo: CiRepo<'_>,
    sha: &str,
) -> Result<(Pipeline, PipelineReport), CiFailure> {
    cx.note("progress", json!({"step": "ci", "commit_sha": sha}))
        .await;
    let fail = |error: String, pipeline: Option<PipelineReport>| {
        if cx.stop.is_cancelled() {
            CiFailure::Stopped
        } else {
            CiFailure::Failed { error, pipeline }
        }
    };
    let repo_id = match wp.client.repo_id(repo).await {
        Ok(id) => id,
        Err(e) => {
            let name = match repo {
                CiRepo::Id(id) => id.to_string(),
                CiRepo::Name(name) => name.to_string(),
            };
            return Err(fail(format!("CI: Woodpecker repository {name}: {e}"), None));
        }
    };
    let query = PipelineQuery::push(sha, cx.project.default_branch.as_str());
    let found = wp
        .client
        .find_pipeline_for_commit(repo_id, query, wp.appear_timeout, wp.poll, cx.stop)
        .await
        .map_err(|e| fail(format!("CI: {e}"), None))?;
    let report = |status: &str| PipelineReport {
        number: found.number,
        status: status.to_owned(),
        url: wp.client.pipeline_url(repo_id, found.number),
    };
    let outcome = match wp
        .client
        .follow(repo_id, found.number, wp.poll, wp.pipeline_timeout, cx.stop)
        .await
    {
        Ok(o) => o,
        Err(e) => {
            let last = match &e {
                WoodpeckerError::Timeout { last_status, .. } => last_status.as_str(),
                _ => found.status.as_str(),
            };
            let error = format!("CI pipeline #{}: {e}", found.number);
            return Err(fail(error, Some(report(last))));
        }
    };
    let status = outcome.status().as_str();
    cx.note(
        "progress",
        json!({"step": "ci_finished", "pipeline": outcome.pipeline.number, "status": status}),
    )
    .await;
    if !outcome.succeeded() {
        let error = format!(
            "CI pipeline #{} ended with status {status}",
            outcome.pipeline.number
        );
        return Err(fail(error, Some(report(status))));
    }
    let report = report(status);
    Ok((outcome.pipeline, report))
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
