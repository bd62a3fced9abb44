//! Small pieces both adapters' runs share: the result of a run that ends before its agent
//! did any work, a wait on a deadline that may be unset, and the error for an invalid
//! request field. Nothing here holds state or decides how a run goes.

use std::time::Duration;

use rdev_core::{AgentError, AgentEvent, AgentResult, AgentStatus, EventSink, Usage};

/// Ends a run whose agent did no work (cancelled or timed out early): sends its
/// `Completed` event and returns it. Nothing ran, so there is no cost, usage or turn.
pub(crate) async fn end_early(
    events: &EventSink,
    status: AgentStatus,
    output: String,
    session_id: Option<String>,
    duration: Duration,
) -> AgentResult {
    let result = AgentResult {
        status,
        output,
        session_id,
        cost_usd: None,
        usage: Usage::default(),
        num_turns: 0,
        duration,
    };
    let _ = events.send(AgentEvent::Completed(result.clone())).await;
    result
}

/// Sleeps until `deadline`, or forever when there is none (a `select!` branch that is
/// off until its deadline is set).
pub(crate) async fn sleep_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The error for a request field that cannot be used.
pub(crate) fn invalid(field: &'static str, reason: String) -> AgentError {
    AgentError::Invalid(rdev_core::ValidationError::InvalidField { field, reason })
}
