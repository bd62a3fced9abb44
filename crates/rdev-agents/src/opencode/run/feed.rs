//! A run's view of the server's event stream: subscribing to `/event` (confirmed by
//! `server.connected`) and the reader task that keeps the watched session's events and the
//! server's own, handing them to the run loop through a bounded channel. It never maps
//! events to [`rdev_core::AgentEvent`]s and never decides when a run ends (the parent
//! module's run loop does both).

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::opencode::client::{ClientError, EventStream, OpenCodeClient, ServerEvent};

/// Capacity of the channel between the SSE reader task and the run loop.
///
/// OpenCode sends bursts: one model step is 10-40 events (a tool part alone is updated
/// three or four times) and deltas come per token chunk; 256 holds several steps, so the
/// reader rarely waits. When the consumer of [`rdev_core::AgentEvent`]s is slow, the run loop waits
/// on the consumer's bounded sink, this channel fills, the reader task stops reading the
/// socket and TCP flow control pushes back on the server: nothing is dropped here. The
/// final result does not depend on this stream at all — it is read from the session's
/// stored messages once the session is idle — so back-pressure can delay it, never lose it.
const EVENT_BUFFER: usize = 256;

/// What the SSE reader task hands the run loop.
#[derive(Debug)]
pub(super) enum Feed {
    Event(ServerEvent),
    Malformed(String),
    Ended(String),
}

/// Opens `/event` for `directory` and waits (up to `timeout`) for `server.connected`, the
/// server's confirmation that the subscription is live.
pub(super) async fn subscribe(
    client: &OpenCodeClient,
    directory: &std::path::Path,
    timeout: Duration,
) -> Result<EventStream, ClientError> {
    let unavailable = |reason: String| ClientError::Unavailable {
        url: client.base_url().to_string(),
        waited: timeout,
        reason,
    };
    let opened = async {
        let mut stream = client.subscribe(directory).await?;
        match stream.next().await {
            Some(Ok(ev)) if ev.kind == "server.connected" => Ok(stream),
            Some(Ok(ev)) => Err(ClientError::Decode {
                method: "GET",
                path: "/event".to_owned(),
                reason: format!("expected server.connected first, got {}", ev.kind),
            }),
            Some(Err(e)) => Err(e),
            None => Err(unavailable("event stream closed at once".to_owned())),
        }
    };
    tokio::time::timeout(timeout, opened)
        .await
        .unwrap_or_else(|_| Err(unavailable("no server.connected event".to_owned())))
}

/// Reads `stream` in its own task, keeping the events of the watched session and the
/// server's own events, and hands them on through a channel of [`EVENT_BUFFER`].
pub(super) fn spawn_reader(
    mut stream: EventStream,
    session: watch::Receiver<Option<String>>,
    stop: CancellationToken,
) -> mpsc::Receiver<Feed> {
    let (tx, rx) = mpsc::channel(EVENT_BUFFER);
    tokio::spawn(async move {
        loop {
            let item = tokio::select! {
                _ = stop.cancelled() => break,
                item = stream.next() => item,
            };
            let feed = match item {
                None => Feed::Ended("the server closed the event stream".to_owned()),
                Some(Err(ClientError::Decode { reason, .. })) => {
                    Feed::Malformed(format!("unreadable opencode event: {reason}"))
                }
                Some(Err(e)) => Feed::Ended(e.to_string()),
                Some(Ok(ev)) => {
                    let ours = match ev.session_id() {
                        Some(id) => session.borrow().as_deref() == Some(id),
                        None => ev.is_server_level(),
                    };
                    if !ours {
                        continue;
                    }
                    Feed::Event(ev)
                }
            };
            let ended = matches!(feed, Feed::Ended(_));
            tokio::select! {
                _ = stop.cancelled() => break,
                sent = tx.send(feed) => if sent.is_err() { break },
            }
            if ended {
                break;
            }
        }
    });
    rx
}
