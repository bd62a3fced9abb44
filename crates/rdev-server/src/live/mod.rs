//! Live views without per-viewer database polling: [`TaskFeeds`] (one poller per watched
//! task, fanned out to the API's `GET /tasks/{id}/events` and the UI's build page) and
//! [`BoardWatch`] (one poller for "the task list changed"). Built once in
//! [`crate::services::Services`]; pollers run only while someone watches.
//!
//! It must not know HTTP or HTML, nor check permissions.

pub mod board;
pub mod task_feed;

use std::sync::Arc;

use rdev_core::Store;

pub use self::{
    board::BoardWatch,
    task_feed::{FeedItem, TaskFeeds},
};

/// The node's live feeds.
#[derive(Debug, Clone)]
pub struct Live {
    /// Per-task event feeds.
    pub tasks: TaskFeeds,
    /// Task list changes.
    pub board: BoardWatch,
}

impl Live {
    /// Feeds over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            tasks: TaskFeeds::new(Arc::clone(&store)),
            board: BoardWatch::new(store),
        }
    }
}
