//! [`BuildOutcome`]: how one build ended, before the worker writes it (completed with its
//! result, failed with a reason and whether to retry, failed after pushing with what it
//! pushed, or stopped because the lease is gone). Shared by the build itself and the parts
//! that can end it early (metering's budget check, push protection). It must not write
//! anything.

use rdev_core::BuildResult;

/// How a build ended, before it is written.
// One per build, moved a few times on its way to the store: boxing the result buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum BuildOutcome {
    /// Completed with this result.
    Completed(BuildResult),
    /// Failed; `retryable` failures go back to the queue while attempts remain.
    Failed { error: String, retryable: bool },
    /// Failed after the work was pushed (CI failed, say): not retried, and `result` keeps
    /// what was pushed for the task and its callback.
    FailedWithResult { error: String, result: BuildResult },
    /// Stopped because the lease is gone (cancelled or expired): write nothing.
    Stopped,
}

/// A failure with `error` as its reason.
pub(super) fn failed(error: impl std::fmt::Display, retryable: bool) -> BuildOutcome {
    BuildOutcome::Failed {
        error: error.to_string(),
        retryable,
    }
}
