//! Moves one run's agent events from the adapter's bounded channel into the store, redacted
//! and numbered. The channel's bound (256) makes a slow store slow the agent's reader down
//! rather than drop events; the forwarder ends when the adapter drops its sender.

use std::sync::Arc;

use rdev_core::{credentials::Redactor, AgentEvent, EventSink, TaskId};
use tokio::{sync::mpsc, task::JoinHandle};

use rdev_core::Store;

/// The channel size between an adapter and the store writer: enough to absorb a burst of
/// tool output while one store write is in flight, small enough to bound memory.
pub const EVENT_BUFFER: usize = 256;

/// The stored kind of an event (its `type` tag).
fn kind(e: &AgentEvent) -> &'static str {
    match e {
        AgentEvent::Started { .. } => "started",
        AgentEvent::Message { .. } => "message",
        AgentEvent::ToolUse { .. } => "tool_use",
        AgentEvent::ToolResult { .. } => "tool_result",
        AgentEvent::Usage(_) => "usage",
        AgentEvent::Error { .. } => "error",
        AgentEvent::Raw { .. } => "raw",
        AgentEvent::Completed(_) => "completed",
    }
}

/// Starts a forwarder for `task`; returns the sink for the adapter and the forwarder's
/// handle (await it after the run to be sure every event is stored).
pub fn forward(
    store: Arc<dyn Store>,
    task: TaskId,
    redactor: Redactor,
) -> (EventSink, JoinHandle<u64>) {
    let (tx, mut rx) = mpsc::channel::<AgentEvent>(EVENT_BUFFER);
    let handle = tokio::spawn(async move {
        let mut stored = 0u64;
        while let Some(event) = rx.recv().await {
            let payload = match serde_json::to_value(&event) {
                Ok(v) => redactor.redacted_json(&v),
                Err(e) => {
                    serde_json::json!({"type": "error", "message": format!("unserialisable event: {e}")})
                }
            };
            match store.append_event(task, kind(&event), payload).await {
                Ok(_) => stored += 1,
                Err(e) => {
                    tracing::warn!(task_id = %task, error = %e, "could not store an agent event")
                }
            }
        }
        stored
    });
    (tx, handle)
}

/// Stores one event that rdev itself emits (not the agent): progress the client can follow.
pub async fn note(store: &dyn Store, task: TaskId, kind: &str, payload: serde_json::Value) {
    if let Err(e) = store.append_event(task, kind, payload).await {
        tracing::warn!(task_id = %task, error = %e, "could not store a progress event");
    }
}
