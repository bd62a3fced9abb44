//! [`WorkSignal`]: a subscription to "something new to pick up" announcements, used by the
//! queue (new or returned tasks) and the callback outbox (rows written). It must not hold
//! any state of its own besides the last value seen.

use tokio::sync::watch;

/// A subscription to announcements. It remembers what it has seen, so an announcement that
/// arrives between an empty read and the next wait is not missed.
#[derive(Debug, Clone)]
pub struct WorkSignal(pub watch::Receiver<u64>);
