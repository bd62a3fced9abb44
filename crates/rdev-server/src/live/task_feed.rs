//! [`TaskFeeds`]: one poll of the store per watched task per node, fanned out to every
//! viewer. The first viewer of a task starts a poller (status, then new events, every
//! [`POLL`]); later viewers join its broadcast; the poller stops once the task has ended
//! and every event was sent, or at the first tick with no viewer left (the broadcast's
//! receiver count is the reference count). Each viewer reads the history it asks for
//! (`after`) once, then only what the poller broadcasts, so 200 open pages of one build
//! cost the database what one does.
//!
//! It must not format anything for a client (the API's SSE and the UI's fragments do that)
//! nor decide who may watch (the caller has authorised the viewer).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use futures::Stream;
use rdev_core::{Store, TaskEvent, TaskId, TaskStatus, WorkTask};
use tokio::sync::broadcast;

/// How often a watched task's poller looks for news. Polling the store (not an in-process
/// channel) makes the stream work on every node of a multi-node deployment.
pub const POLL: Duration = Duration::from_millis(200);
/// Events read per store query.
const PAGE: u32 = 500;
/// Messages a slow viewer may fall behind before it catches up from the store itself.
const BACKLOG: usize = 1024;

/// What a viewer of a task receives, in order: stored events (history, then live), task
/// snapshots whenever the row changes, and finally `End` (or `Failed`).
#[derive(Debug, Clone)]
pub enum FeedItem {
    /// One stored event; sequence numbers arrive in order without gaps or repeats.
    Event(Arc<TaskEvent>),
    /// The task's row changed (status, attempt, result); sent live only.
    Task(Arc<WorkTask>),
    /// The task has ended and every event was sent.
    End(TaskStatus),
    /// The store failed; the feed ends.
    Failed(String),
}

/// One running poller: its channel and how far it has read.
#[derive(Debug, Clone)]
struct Feed {
    tx: broadcast::Sender<FeedItem>,
    /// The last event sequence number broadcast.
    pos: Arc<AtomicI64>,
}

/// The per-task pollers of this node, shared by the API's and the UI's event streams.
#[derive(Debug, Clone)]
pub struct TaskFeeds {
    store: Arc<dyn Store>,
    feeds: Arc<Mutex<HashMap<TaskId, Feed>>>,
    poll: Duration,
}

impl TaskFeeds {
    /// Feeds over `store`, polling every [`POLL`].
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            feeds: Arc::default(),
            poll: POLL,
        }
    }

    /// How many tasks have a running poller (for tests and the benchmark).
    pub fn active(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, Feed>> {
        self.feeds.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins the poller of `id`, starting one that reads after `start` if none runs.
    /// Returns the receiver and the poller's position at the moment of joining.
    fn join(&self, id: TaskId, start: i64) -> (broadcast::Receiver<FeedItem>, i64) {
        let mut feeds = self.lock();
        if let Some(feed) = feeds.get(&id) {
            return (feed.tx.subscribe(), feed.pos.load(Ordering::Acquire));
        }
        let (tx, rx) = broadcast::channel(BACKLOG);
        let feed = Feed {
            tx,
            pos: Arc::new(AtomicI64::new(start)),
        };
        feeds.insert(id, feed.clone());
        drop(feeds);
        tokio::spawn(self.clone().poll_task(id, feed));
        (rx, start)
    }

    /// Removes `feed` from the table if it is still the one registered for `id`.
    fn remove(&self, id: TaskId, feed: &Feed) {
        let mut feeds = self.lock();
        if feeds.get(&id).is_some_and(|f| f.tx.same_channel(&feed.tx)) {
            feeds.remove(&id);
        }
    }

    /// The poller: status first, then the events after it, so that events stored just
    /// before the task ended are sent before `End`.
    async fn poll_task(self, id: TaskId, feed: Feed) {
        let mut last = feed.pos.load(Ordering::Acquire);
        let mut seen: Option<WorkTask> = None;
        loop {
            {
                // Under the table's lock, so nobody joins a poller that is about to stop.
                let mut feeds = self.lock();
                if feed.tx.receiver_count() == 0 {
                    if feeds.get(&id).is_some_and(|f| f.tx.same_channel(&feed.tx)) {
                        feeds.remove(&id);
                    }
                    return;
                }
            }
            let task = match self.store.get(id).await {
                Ok(t) => t,
                Err(e) => {
                    self.remove(id, &feed);
                    let _ = feed.tx.send(FeedItem::Failed(e.to_string()));
                    return;
                }
            };
            let finished = task.status.is_terminal().then_some(task.status);
            if seen.as_ref() != Some(&task) {
                seen = Some(task.clone());
                let _ = feed.tx.send(FeedItem::Task(Arc::new(task)));
            }
            loop {
                match self.store.events_since(id, last, PAGE).await {
                    Ok(batch) => {
                        let full = batch.len() as u32 == PAGE;
                        for ev in batch {
                            last = ev.seq;
                            feed.pos.store(last, Ordering::Release);
                            let _ = feed.tx.send(FeedItem::Event(Arc::new(ev)));
                        }
                        if !full {
                            break;
                        }
                    }
                    Err(e) => {
                        self.remove(id, &feed);
                        let _ = feed.tx.send(FeedItem::Failed(e.to_string()));
                        return;
                    }
                }
            }
            if let Some(status) = finished {
                // Removed before `End` is sent: a viewer joining later starts a new poller
                // (which finds the task ended) instead of waiting on this one.
                self.remove(id, &feed);
                let _ = feed.tx.send(FeedItem::End(status));
                return;
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    /// The events of task `id` after sequence number `after` (history from the store,
    /// then live), task snapshots as the row changes, and `End` once it has ended.
    pub fn watch(&self, id: TaskId, after: i64) -> impl Stream<Item = FeedItem> + Send + 'static {
        let feeds = self.clone();
        async_stream::stream! {
            let mut after = after;
            // History first, from the store, as far as it goes now.
            match feeds.read_after(id, after, i64::MAX).await {
                Ok(batch) => for ev in batch { after = ev.seq; yield FeedItem::Event(Arc::new(ev)); },
                Err(e) => { yield FeedItem::Failed(e); return; }
            }
            let (mut rx, pos) = feeds.join(id, after);
            // Events the poller broadcast before this viewer joined.
            if pos > after {
                match feeds.read_after(id, after, pos).await {
                    Ok(batch) => for ev in batch { after = ev.seq; yield FeedItem::Event(Arc::new(ev)); },
                    Err(e) => { yield FeedItem::Failed(e); return; }
                }
            }
            loop {
                let item = match rx.recv().await {
                    Ok(item) => item,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Too slow for the broadcast: catch up from the store, then go on.
                        match feeds.read_after(id, after, i64::MAX).await {
                            Ok(batch) => for ev in batch { after = ev.seq; yield FeedItem::Event(Arc::new(ev)); },
                            Err(e) => { yield FeedItem::Failed(e); return; }
                        }
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        // The poller stopped (the task ended) before this viewer's turn.
                        let (next, pos) = feeds.join(id, after);
                        rx = next;
                        if pos > after {
                            match feeds.read_after(id, after, pos).await {
                                Ok(batch) => for ev in batch { after = ev.seq; yield FeedItem::Event(Arc::new(ev)); },
                                Err(e) => { yield FeedItem::Failed(e); return; }
                            }
                        }
                        continue;
                    }
                };
                match item {
                    FeedItem::Event(ev) if ev.seq <= after => {}
                    FeedItem::Event(ev) => {
                        if ev.seq > after + 1 {
                            match feeds.read_after(id, after, ev.seq - 1).await {
                                Ok(batch) => for gap in batch { yield FeedItem::Event(Arc::new(gap)); },
                                Err(e) => { yield FeedItem::Failed(e); return; }
                            }
                        }
                        after = ev.seq;
                        yield FeedItem::Event(ev);
                    }
                    FeedItem::End(status) => {
                        match feeds.read_after(id, after, i64::MAX).await {
                            Ok(batch) => for ev in batch { yield FeedItem::Event(Arc::new(ev)); },
                            Err(e) => { yield FeedItem::Failed(e); return; }
                        }
                        yield FeedItem::End(status);
                        return;
                    }
                    FeedItem::Failed(e) => { yield FeedItem::Failed(e); return; }
                    task @ FeedItem::Task(_) => yield task,
                }
            }
        }
    }

    /// Stored events with `after < seq <= upto`, in order.
    async fn read_after(
        &self,
        id: TaskId,
        after: i64,
        upto: i64,
    ) -> Result<Vec<TaskEvent>, String> {
        let mut out = Vec::new();
        let mut from = after;
        loop {
            let batch = self
                .store
                .events_since(id, from, PAGE)
                .await
                .map_err(|e| e.to_string())?;
            let full = batch.len() as u32 == PAGE;
            for ev in batch {
                if ev.seq > upto {
                    return Ok(out);
                }
                from = ev.seq;
                out.push(ev);
            }
            if !full {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use rdev_core::{BuildSpec, NewTask, ProjectName};
    use rdev_store::{SqlStore, StoreConfig};
    use serde_json::json;

    use super::*;

    async fn store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
        let url = format!("sqlite:{}", dir.path().join("feed.db").display());
        let db = rdev_store::Db::connect(&url).await.unwrap();
        db.migrate().await.unwrap();
        Arc::new(SqlStore::new(db, StoreConfig::default()).await.unwrap())
    }

    /// Collects a viewer's events until `End`, returning their sequence numbers.
    async fn collect(feeds: TaskFeeds, id: TaskId, after: i64) -> (Vec<i64>, TaskStatus) {
        let mut seqs = Vec::new();
        let mut feed = Box::pin(feeds.watch(id, after));
        while let Some(item) = feed.next().await {
            match item {
                FeedItem::Event(ev) => seqs.push(ev.seq),
                FeedItem::End(status) => return (seqs, status),
                FeedItem::Failed(e) => panic!("{e}"),
                FeedItem::Task(_) => {}
            }
        }
        panic!("the feed ended without End");
    }

    #[tokio::test]
    async fn many_viewers_share_one_poller_and_each_gets_every_event_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let project = ProjectName::parse("feed").unwrap();
        let id = store
            .create(NewTask::new(project, BuildSpec::new("x")))
            .await
            .unwrap()
            .task
            .id;
        for i in 0..3 {
            store
                .append_event(id, "message", json!({"i": i}))
                .await
                .unwrap();
        }
        let feeds = TaskFeeds::new(Arc::clone(&store));
        let viewers: Vec<_> = (0..20)
            .map(|n| tokio::spawn(collect(feeds.clone(), id, if n % 2 == 0 { 0 } else { 2 })))
            .collect();
        // Every viewer has joined: one poller for all of them.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while feeds.active() != 1 {
            assert!(tokio::time::Instant::now() < deadline, "no poller started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for i in 3..40 {
            store
                .append_event(id, "message", json!({"i": i}))
                .await
                .unwrap();
        }
        assert_eq!(feeds.active(), 1, "still one poller for twenty viewers");
        store.cancel(id).await.unwrap();
        for (n, v) in viewers.into_iter().enumerate() {
            let (seqs, status) = v.await.unwrap();
            let from = if n % 2 == 0 { 1 } else { 3 };
            assert_eq!(seqs, (from..=40).collect::<Vec<_>>(), "viewer {n}");
            assert_eq!(status, TaskStatus::Cancelled);
        }
        // The task ended: the poller is gone, and a late viewer still gets history and End.
        assert_eq!(feeds.active(), 0);
        let (seqs, _) = collect(feeds.clone(), id, 38).await;
        assert_eq!(seqs, vec![39, 40]);
    }

    #[tokio::test]
    async fn the_poller_stops_when_the_last_viewer_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let id = store
            .create(NewTask::new(
                ProjectName::parse("feed").unwrap(),
                BuildSpec::new("x"),
            ))
            .await
            .unwrap()
            .task
            .id;
        let feeds = TaskFeeds::new(Arc::clone(&store));
        let viewers: Vec<_> = (0..2)
            .map(|_| {
                let mut feed = Box::pin(feeds.watch(id, 0));
                tokio::spawn(async move { while feed.next().await.is_some() {} })
            })
            .collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while feeds.active() != 1 {
            assert!(tokio::time::Instant::now() < deadline, "no poller started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for v in viewers {
            v.abort();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while feeds.active() != 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the poller outlived its viewers"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
