//! [`StubUpstream`]: a Messages API endpoint that answers from a fixed list, for testing
//! what sits in front of a model (rdev's gateway: failover on 5xx/529, retries after a
//! 429). Each `POST /v1/messages` gets the next answer of the list, the last one repeated,
//! and is counted. It never reads a prompt; the scripted model does that.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
    Router,
};
use tokio::net::TcpListener;

/// One answer: a status, an optional `retry-after`, a JSON body.
#[derive(Debug, Clone)]
pub struct StubAnswer {
    pub status: u16,
    pub retry_after: Option<&'static str>,
    pub body: &'static str,
}

impl StubAnswer {
    /// An Anthropic-shaped error answer.
    pub fn error(status: u16, retry_after: Option<&'static str>) -> Self {
        Self {
            status,
            retry_after,
            body: r#"{"type":"error","error":{"type":"overloaded_error","message":"stub"}}"#,
        }
    }
}

#[derive(Debug)]
struct Shared {
    answers: Vec<StubAnswer>,
    hits: AtomicUsize,
}

/// A running stub on a free loopback port.
#[derive(Debug, Clone)]
pub struct StubUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

async fn answer(State(shared): State<Arc<Shared>>) -> Response {
    let n = shared.hits.fetch_add(1, Ordering::SeqCst);
    let a = &shared.answers[n.min(shared.answers.len() - 1)];
    let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, [("content-type", "application/json")], a.body).into_response();
    if let Some(after) = a.retry_after {
        response
            .headers_mut()
            .insert("retry-after", after.parse().expect("ascii"));
    }
    response
}

impl StubUpstream {
    /// Starts answering with `answers` (at least one).
    pub async fn start(answers: Vec<StubAnswer>) -> anyhow::Result<Self> {
        anyhow::ensure!(!answers.is_empty(), "a stub needs an answer");
        let shared = Arc::new(Shared {
            answers,
            hits: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/v1/messages", post(answer))
            .with_state(Arc::clone(&shared));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { addr, shared })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many calls it answered.
    pub fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }
}
