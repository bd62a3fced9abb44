//! The agent's request body, read whole while it is already being sent to the first
//! upstream, so that the agent's upload to the gateway and the gateway's upload to the
//! upstream overlap (docs/gateway.md, "Overhead"). The call is not admitted while its body
//! streams: the last byte is held back until the whole body has been read, parsed and its
//! reservation admitted ([`Upload::complete`]); a call that is refused (or whose body cannot
//! be read) drops its [`Upload`], which ends the upstream's request body in an error, so
//! the upstream never receives a complete request and never runs the call.
//!
//! The body is kept as well, as the chunks it came in (never copied into one piece):
//! failover resends it in full. The budget needs its size, `model` and `max_tokens`,
//! read from the whole body when it is complete ([`super::fields`]). This module decides
//! nothing: admission is [`super::forward`]'s, which upstream gets the early request and
//! failover are [`super::upstream`]'s (its early request is driven here through
//! [`Drive`], so this module does not depend on that one).

use std::{convert::Infallible, future::Future, pin::Pin, task::Poll};

use axum::body::{Body, HttpBody};
use bytes::{Bytes, BytesMut};
use futures::channel::mpsc;

use super::fields::RequestFields;

/// A request in flight that must be driven while the body is read: the first upstream's
/// early request (`upstream::Early`).
pub trait Drive {
    /// Makes what progress it can (connection, head, the body so far, its answer).
    fn progress(&mut self, cx: &mut std::task::Context<'_>);
}

/// Why the agent's request body was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Larger than the gateway accepts.
    #[error("length limit exceeded")]
    TooLarge,
    /// The agent's connection failed mid-body.
    #[error(transparent)]
    Body(#[from] axum::Error),
}

/// The error that ends an upstream request body whose call was not admitted.
#[derive(Debug, thiserror::Error)]
#[error("the gateway did not admit this call")]
pub struct NotAdmitted;

type Chunk = Result<Bytes, NotAdmitted>;

/// The sending end of an upstream request's body, while its call is undecided: everything
/// the agent sent so far but the last byte.
#[derive(Debug)]
pub struct Upload {
    tx: Option<mpsc::UnboundedSender<Chunk>>,
    held: Option<Bytes>,
}

impl Upload {
    /// An upload and the upstream request body it feeds.
    pub fn channel() -> (Self, reqwest::Body) {
        let (tx, rx) = mpsc::unbounded();
        (
            Self {
                tx: Some(tx),
                held: None,
            },
            reqwest::Body::wrap_stream(rx),
        )
    }

    fn send(&self, chunk: Bytes) {
        if let Some(tx) = &self.tx {
            // The receiver is gone once the upstream request failed: nothing to feed.
            let _ = tx.unbounded_send(Ok(chunk));
        }
    }

    /// Passes `chunk` on, all but its last byte, which is held until the next chunk or
    /// [`Self::complete`]. Zero-copy: both parts are slices of `chunk`.
    pub fn push(&mut self, chunk: Bytes) {
        let Some(last) = chunk.len().checked_sub(1) else {
            return;
        };
        if let Some(held) = self.held.take() {
            self.send(held);
        }
        if last > 0 {
            self.send(chunk.slice(..last));
        }
        self.held = Some(chunk.slice(last..));
    }

    /// The call was admitted: the held byte goes, and the body ends.
    pub fn complete(mut self) {
        if let Some(held) = self.held.take() {
            self.send(held);
        }
        // Dropping the sender ends the stream, cleanly.
        self.tx = None;
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        // Not completed: the body ends in an error, which makes the HTTP client abort the
        // request (close the connection) with the body short of its end.
        if let Some(tx) = self.tx.take() {
            let _ = tx.unbounded_send(Err(NotAdmitted));
        }
    }
}

/// A request body as it was read: the chunks it came in.
#[derive(Debug, Clone, Default)]
pub struct RequestBody {
    chunks: Vec<Bytes>,
    len: usize,
}

impl RequestBody {
    fn push(&mut self, chunk: Bytes) {
        self.len += chunk.len();
        self.chunks.push(chunk);
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The body in one piece (copied when it came in several).
    pub fn contiguous(&self) -> Bytes {
        match self.chunks.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => {
                let mut whole = BytesMut::with_capacity(self.len);
                for c in many {
                    whole.extend_from_slice(c);
                }
                whole.freeze()
            }
        }
    }

    /// The body for another request upstream, and the `content-length` to send with it
    /// when the client cannot know it (a body of several chunks is streamed).
    pub fn to_upstream(&self) -> (reqwest::Body, Option<u64>) {
        match self.chunks.as_slice() {
            [] => (reqwest::Body::from(Bytes::new()), None),
            [one] => (reqwest::Body::from(one.clone()), None),
            _ => {
                let chunks = self.chunks.clone().into_iter().map(Ok::<_, Infallible>);
                let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
                (body, Some(self.len as u64))
            }
        }
    }
}

/// A body read whole, its fields, and the first upstream's request when it was started
/// early.
#[derive(Debug)]
pub struct Read<Early> {
    pub body: RequestBody,
    pub fields: RequestFields,
    pub early: Option<(Early, Upload)>,
}

/// The next data frame of `body` (trailers are skipped, as collecting a body does), while
/// `early` is driven too: its connection made, its request handed over, its answer taken
/// when it comes.
async fn next_data(
    body: &mut Body,
    mut early: Option<&mut impl Drive>,
) -> Result<Option<Bytes>, axum::Error> {
    std::future::poll_fn(|cx| {
        if let Some(early) = early.as_deref_mut() {
            early.progress(cx);
        }
        loop {
            match std::task::ready!(Pin::new(&mut *body).poll_frame(cx)) {
                None => return Poll::Ready(Ok(None)),
                Some(Err(e)) => return Poll::Ready(Err(e)),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() {
                            return Poll::Ready(Ok(Some(data)));
                        }
                    }
                }
            }
        }
    })
    .await
}

/// Reads `body` whole (at most `limit` bytes; `declared` is its `content-length`) and its
/// fields. A body that is complete in its first frame (any small request) is parsed as
/// it is. Otherwise `start` is given a streaming request body and may start the first
/// upstream's request with it; each chunk then goes there as it arrives, all but the last
/// byte ([`Upload`]), while the request is driven alongside the reading; the fields are
/// read from the whole body at its end.
pub async fn read<Early: Drive, F, Fut>(
    mut body: Body,
    limit: usize,
    declared: Option<u64>,
    start: F,
) -> Result<Read<Early>, ReadError>
where
    F: FnOnce(reqwest::Body) -> Fut,
    Fut: Future<Output = Option<Early>>,
{
    let mut whole = RequestBody::default();
    let Some(first) = next_data(&mut body, None::<&mut Early>).await? else {
        return Ok(Read {
            fields: RequestFields::parse(b""),
            body: whole,
            early: None,
        });
    };
    if first.len() > limit {
        return Err(ReadError::TooLarge);
    }
    if body.is_end_stream() || declared == Some(first.len() as u64) {
        let fields = RequestFields::parse(&first);
        whole.push(first);
        return Ok(Read {
            body: whole,
            fields,
            early: None,
        });
    }
    let (mut upload, upstream_body) = Upload::channel();
    let mut early = start(upstream_body).await;
    let mut chunk = Some(first);
    while let Some(c) = chunk {
        if whole.len() + c.len() > limit {
            return Err(ReadError::TooLarge);
        }
        if early.is_some() {
            upload.push(c.clone());
        }
        whole.push(c);
        chunk = next_data(&mut body, early.as_mut()).await?;
    }
    // Parsed whole, by serde_json, once complete: a scan of each chunk as it came (tried)
    // saved about 1 ms of CPU per 4 MiB request, not worth a JSON grammar of our own.
    let fields = RequestFields::parse(&whole.contiguous());
    Ok(Read {
        body: whole,
        fields,
        early: early.map(|e| (e, upload)),
    })
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    fn pair() -> (Upload, mpsc::UnboundedReceiver<Chunk>) {
        let (tx, rx) = mpsc::unbounded();
        (
            Upload {
                tx: Some(tx),
                held: None,
            },
            rx,
        )
    }

    async fn drain(rx: mpsc::UnboundedReceiver<Chunk>) -> (Vec<u8>, bool) {
        let items: Vec<Chunk> = rx.collect().await;
        let failed = items.iter().any(Result::is_err);
        let bytes = items.into_iter().flatten().flatten().collect();
        (bytes, failed)
    }

    #[tokio::test]
    async fn the_last_byte_is_held_back_until_the_call_is_admitted() {
        let (mut upload, mut rx) = pair();
        upload.push(Bytes::from_static(b"{\"model\""));
        upload.push(Bytes::new());
        upload.push(Bytes::from_static(b":1}"));
        let mut sent = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            sent.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(sent, b"{\"model\":1", "all but the last byte, in order");
        upload.complete();
        let (rest, failed) = drain(rx).await;
        assert_eq!(rest, b"}");
        assert!(!failed, "completed cleanly");
    }

    #[tokio::test]
    async fn a_call_not_admitted_ends_the_upstream_body_in_an_error() {
        let (mut upload, rx) = pair();
        upload.push(Bytes::from_static(b"{\"model\":1}"));
        drop(upload);
        let (sent, failed) = drain(rx).await;
        assert_eq!(sent, b"{\"model\":1", "never the last byte");
        assert!(failed, "the body ends in an error, not cleanly");
    }
}
