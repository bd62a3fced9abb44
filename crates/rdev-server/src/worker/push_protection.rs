//! The worker's part of push protection (docs/security.md): right before a push, gathers
//! every value rdev knows for this build (what it handed to the task, the attempt's and
//! the shared agent server's gateway tokens, the project's callback signing secret, rdev's
//! own API and CI tokens, the agents' keys), scans the
//! commits to push ([`crate::scan`]), records the outcome as a `progress` event, and says
//! whether the push may go ahead. With the project's `push_protection = "block"` (the
//! default) a finding fails the task with `secret_in_commit`, not retried, and nothing is
//! pushed; with `"warn"` the push goes ahead and the findings are recorded on the task.
//! The scan is bounded; what could not be scanned counts as a finding (`scan_limit`).

use std::sync::Arc;

use rdev_core::{ErrorCode, Project, PushProtection, PushProtectionReport, TaskId};
use serde_json::json;

use super::events;
use crate::services::Services;
use crate::{
    callbacks::keys::read_signing_secret,
    git::Workspace,
    scan::{rdev_secrets, scan_push, ScanLimits, Scanner, SECRET_IN_COMMIT},
    secrets::Injection,
};

/// What the build does next.
#[derive(Debug)]
pub(super) enum Verdict {
    /// Push; with `Some`, the findings of `warn` mode to add to the task's result.
    Push(Option<PushProtectionReport>),
    /// Do not push: the task fails with this error.
    Stop { error: String, retryable: bool },
}

/// Scans what a push of `ws` would send and decides (see the module documentation).
pub(super) async fn check(
    deps: &Services,
    task: TaskId,
    project: &Project,
    ws: &Workspace,
    injection: &Injection,
) -> Verdict {
    let stop = |error: String, retryable| Verdict::Stop { error, retryable };
    // A list stored around the API is refused here too: an allow-list that cannot be read
    // must not silently allow nothing, or everything.
    let allow = match project.push_protection_allow() {
        Ok(a) => a,
        Err(e) => return stop(format!("{}: push protection: {e}", e.code()), false),
    };
    let actor = format!("task:{task}");
    let signing =
        match read_signing_secret(&deps.secrets, &project.name, &actor, "push-protection").await {
            Ok(s) => s,
            Err(e) => {
                return stop(
                    format!("push protection could not read the project's signing secret: {e}"),
                    true,
                )
            }
        };
    let own = rdev_secrets(&deps.config);
    // The injection also holds the attempt's gateway token; the shared agent server's
    // token is the gateway's own.
    let server_token = ("gateway server token", deps.gateway.server_token().expose());
    let known = injection
        .known_values()
        .chain(
            signing
                .as_ref()
                .map(|s| ("callback signing secret", s.expose())),
        )
        .chain(std::iter::once(server_token))
        .chain(own.iter().map(|(k, v)| (k.as_str(), v.expose())));
    let scanner = Arc::new(Scanner::new(known, allow));
    let report = match scan_push(ws, scanner, &ScanLimits::default()).await {
        Ok(r) => r,
        Err(e) => {
            return stop(
                format!("push protection could not read the commits to push: {e}"),
                true,
            )
        }
    };
    let mode = project.push_protection;
    let outcome = match (report.is_clean(), mode) {
        (true, _) => "clean",
        (false, PushProtection::Block) => "blocked",
        (false, PushProtection::Warn) => "warned",
    };
    tracing::info!(
        outcome,
        findings = report.total_findings,
        files = report.files,
        bytes = report.bytes,
        elapsed_ms = report.elapsed_ms,
        "push protection scanned the commits to push"
    );
    events::note(
        deps.store.as_ref(),
        task,
        "progress",
        json!({
            "step": "push_protection",
            "outcome": outcome,
            "mode": mode,
            "commits": report.commits,
            "files": report.files,
            "bytes": report.bytes,
            "elapsed_ms": report.elapsed_ms,
            "total_findings": report.total_findings,
            "findings": report.findings,
        }),
    )
    .await;
    if report.is_clean() {
        return Verdict::Push(None);
    }
    match mode {
        PushProtection::Block => stop(
            format!(
                "{SECRET_IN_COMMIT}: push protection found {} in the commits to push, so \
                 nothing was pushed: {} (remove it and build again; a known test fixture's \
                 path can go in the project's push_protection_allow)",
                plural(report.total_findings),
                report.summary()
            ),
            false,
        ),
        PushProtection::Warn => Verdict::Push(Some(PushProtectionReport {
            mode,
            total_findings: report.total_findings,
            findings: report.findings.iter().map(|f| json!(f)).collect(),
        })),
    }
}

fn plural(n: usize) -> String {
    if n == 1 {
        "1 secret".to_owned()
    } else {
        format!("{n} secrets")
    }
}

#[cfg(test)]
mod tests {
    use super::plural;

    #[test]
    fn findings_are_counted_in_words() {
        assert_eq!(plural(1), "1 secret");
        assert_eq!(plural(3), "3 secrets");
    }
}
