//! A large request goes to the first upstream while the agent is still sending it
//! (docs/gateway.md, "Overhead"), all but its last byte until the call is admitted. Against
//! upstreams that are real servers on loopback: a raw one that records every byte it
//! receives on each connection (so a test sees a request that never completed), and one
//! that records the whole bodies it was sent.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::HeaderMap,
    routing::post,
    Router,
};
use futures::channel::mpsc;
use rdev_core::Budget;
use rdev_server::{
    config::UpstreamConfig,
    gateway::{Gateway, GrantSpec, Spend},
    metrics::Metrics,
    Config,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const MIB: usize = 1024 * 1024;

const JSON_ANSWER: &str = "{\"id\":\"msg_1\",\"type\":\"message\",\"model\":\"claude-sonnet-4-5\",\"content\":[{\"type\":\"text\",\"text\":\"ok\"}],\"usage\":{\"input_tokens\":11,\"output_tokens\":22}}";

fn http_answer(status: &str, extra: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n{extra}\r\n{body}",
        body.len()
    )
}

fn ok_answer() -> String {
    http_answer("200 OK", "", JSON_ANSWER)
}

fn error_answer(status: &str, extra: &str) -> String {
    let body = r#"{"type":"error","error":{"type":"overloaded_error","message":"raw"}}"#;
    http_answer(status, extra, body)
}

/// A Messages request of about `size` bytes, its prompt text varied (and not all ASCII).
fn big_body(size: usize) -> Bytes {
    let text: String = (0..size)
        .map(|i| match i % 97 {
            0 => 'é',
            n => char::from(b'a' + (n % 26) as u8),
        })
        .collect();
    let json = format!(
        "{{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":64,\"stream\":false,\
         \"messages\":[{{\"role\":\"user\",\"content\":\"{text}\"}}]}}"
    );
    Bytes::from(json)
}

/// What the raw upstream saw on one connection.
#[derive(Debug, Clone, Default)]
struct Conn {
    declared: usize,
    body: Vec<u8>,
    /// The whole declared body arrived.
    complete: bool,
    /// It wrote its answer.
    answered: bool,
    /// The gateway closed the connection.
    closed: bool,
}

/// When the raw upstream answers on a connection, and with what (a whole HTTP response).
#[derive(Debug, Clone)]
enum Reply {
    /// Once the whole body is in.
    AfterBody(String),
    /// As soon as this many body bytes are in, then it goes on reading.
    Early(usize, String),
}

/// A raw HTTP/1.1 upstream (`content-length` bodies only): the connection `i` is answered
/// by `replies[i]` (the last one repeated), and every connection's bytes are recorded.
#[derive(Clone)]
struct RawUpstream {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<Conn>>>,
}

impl RawUpstream {
    async fn start(replies: Vec<Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let raw = Self {
            addr: listener.local_addr().unwrap(),
            conns: Arc::default(),
        };
        let conns = Arc::clone(&raw.conns);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let i = {
                    let mut c = conns.lock().unwrap();
                    c.push(Conn::default());
                    c.len() - 1
                };
                let reply = replies[i.min(replies.len() - 1)].clone();
                tokio::spawn(serve_raw(stream, Arc::clone(&conns), i, reply));
            }
        });
        raw
    }

    fn conns(&self) -> Vec<Conn> {
        self.conns.lock().unwrap().clone()
    }

    /// Waits until `cond` holds for the connections seen so far.
    async fn wait(&self, what: &str, cond: impl Fn(&[Conn]) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !cond(&self.conns()) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: {:?}",
                summary(&self.conns())
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The connections without their bodies (for messages).
fn summary(conns: &[Conn]) -> Vec<(usize, usize, bool, bool, bool)> {
    conns
        .iter()
        .map(|c| (c.declared, c.body.len(), c.complete, c.answered, c.closed))
        .collect()
}

async fn serve_raw(mut stream: TcpStream, conns: Arc<Mutex<Vec<Conn>>>, i: usize, reply: Reply) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut head = Vec::new();
    let end = loop {
        let n = stream.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            conns.lock().unwrap()[i].closed = true;
            return;
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
    let declared: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .expect("the raw upstream reads content-length bodies only")
        .trim()
        .parse()
        .unwrap();
    let mut pending = head.split_off(end);
    conns.lock().unwrap()[i].declared = declared;
    loop {
        let (answer, complete, received) = {
            let mut c = conns.lock().unwrap();
            let conn = &mut c[i];
            conn.body.append(&mut pending);
            conn.complete = conn.body.len() >= declared;
            let answer = match &reply {
                Reply::Early(after, a) if conn.body.len() >= *after && !conn.answered => Some(a),
                Reply::AfterBody(a) if conn.complete && !conn.answered => Some(a),
                _ => None,
            };
            conn.answered |= answer.is_some();
            (answer.cloned(), conn.complete, conn.body.len())
        };
        if let Some(a) = answer {
            let _ = stream.write_all(a.as_bytes()).await;
        }
        if complete {
            // Answered (`connection: close`); the gateway closes its end.
            let _ = stream.shutdown().await;
            return;
        }
        let n = stream.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            conns.lock().unwrap()[i].closed = true;
            return;
        }
        pending.extend_from_slice(&buf[..n.min(declared - received)]);
    }
}

/// An upstream that reads whole bodies, records them with their headers, and answers
/// [`JSON_ANSWER`].
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
}

async fn record(
    State(r): State<Recorder>,
    headers: HeaderMap,
    body: Bytes,
) -> impl axum::response::IntoResponse {
    r.seen.lock().unwrap().push((headers, body));
    ([("content-type", "application/json")], JSON_ANSWER)
}

async fn start_recorder() -> (Recorder, SocketAddr) {
    let r = Recorder::default();
    let app = Router::new()
        .route("/v1/messages", post(record))
        .layer(DefaultBodyLimit::disable())
        .with_state(r.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (r, addr)
}

async fn gateway_to(upstreams: &[(&str, SocketAddr)], metrics: Metrics) -> Gateway {
    let mut config = Config::default();
    config.gateway.first_byte_timeout_secs = 10.0;
    config.gateway.connect_timeout_secs = 2.0;
    config.gateway.upstreams = upstreams
        .iter()
        .map(|(name, addr)| UpstreamConfig {
            name: (*name).into(),
            base_url: format!("http://{addr}"),
            api_key_env: Some("KEY".into()),
            api_key_secret: None,
            auth: Default::default(),
        })
        .collect();
    let settings = config
        .gateway_settings_from(|_| Some("sk-upstream".into()))
        .unwrap();
    Gateway::start(settings, None, metrics, None).await.unwrap()
}

/// An agent's call with `body` whole (sized, or chunked when it is a stream).
async fn call(
    gw: &Gateway,
    grant: &rdev_server::gateway::Grant,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/messages", gw.url()))
        .header("x-api-key", grant.token().expose())
        .body(body)
        .send()
        .await
        .unwrap()
}

/// An agent's call whose body the test feeds piece by piece (with its `content-length`).
struct Paced {
    tx: mpsc::UnboundedSender<Result<Bytes, std::io::Error>>,
    response: tokio::task::JoinHandle<reqwest::Response>,
}

fn paced_call(gw: &Gateway, token: &str, len: usize) -> Paced {
    let (tx, rx) = mpsc::unbounded();
    let request = reqwest::Client::new()
        .post(format!("{}/v1/messages", gw.url()))
        .header("x-api-key", token)
        .header("content-type", "application/json")
        .header("content-length", len)
        .body(reqwest::Body::wrap_stream(rx));
    let response = tokio::spawn(async move { request.send().await.unwrap() });
    Paced { tx, response }
}

impl Paced {
    fn send(&self, part: Bytes) {
        self.tx.unbounded_send(Ok(part)).unwrap();
    }

    async fn finish(self, rest: Bytes) -> reqwest::Response {
        self.send(rest);
        drop(self.tx);
        tokio::time::timeout(Duration::from_secs(30), self.response)
            .await
            .expect("the call is answered")
            .unwrap()
    }
}

/// Sends the first 2 MiB of `body` as an agent's call through `gw`, waits until `upstream`
/// has answered that early request (`why`), sends the rest, and checks the agent got
/// [`JSON_ANSWER`] (from wherever the gateway took it next).
async fn answered_early_then_completed(
    gw: &Gateway,
    upstream: &RawUpstream,
    body: Bytes,
    why: &str,
) {
    let grant = gw.grant(GrantSpec::default());
    let call = paced_call(gw, grant.token().expose(), body.len());
    call.send(body.slice(..2 * MIB));
    upstream
        .wait(why, |c| c.first().is_some_and(|c| c.answered))
        .await;
    let response = call.finish(body.slice(2 * MIB..)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap(), JSON_ANSWER.as_bytes());
}

#[tokio::test]
async fn a_call_refused_by_its_budget_while_its_body_streams_never_reaches_the_upstream_whole() {
    let raw = RawUpstream::start(vec![Reply::AfterBody(ok_answer())]).await;
    let gw = gateway_to(&[("only", raw.addr)], Metrics::default()).await;
    // Spent before this call: every call is refused, but only once its body is read.
    let grant = gw.grant(GrantSpec {
        budget: Budget {
            max_cost_usd: None,
            max_tokens: Some(10),
        },
        prior: Spend {
            cost_usd: 0.0,
            tokens: 10,
        },
        ..GrantSpec::default()
    });
    let body = big_body(3 * MIB);
    let len = body.len();
    let call = paced_call(&gw, grant.token().expose(), len);
    call.send(body.slice(..len - 1));
    // The body goes upstream while the agent is still sending it, all of it but the last
    // byte the gateway has.
    raw.wait("all but 2 bytes reach the upstream", |c| {
        c.first().is_some_and(|c| c.body.len() == len - 2)
    })
    .await;
    let response = call.finish(body.slice(len - 1..)).await;
    assert_eq!(response.status(), 402);
    let v: serde_json::Value = response.json().await.unwrap();
    assert_eq!(v["error"]["type"], "billing_error");
    raw.wait("the gateway aborts the upstream request", |c| c[0].closed)
        .await;
    let conns = raw.conns();
    assert_eq!(conns.len(), 1, "{:?}", summary(&conns));
    let c = &conns[0];
    assert_eq!(c.declared, body.len(), "the agent's content-length");
    assert!(
        !c.complete && !c.answered && c.body.len() < len,
        "the upstream never had the whole request: {:?}",
        summary(&conns)
    );
    assert_eq!(&c.body[..], &body[..c.body.len()], "what came was the body");
}

#[tokio::test]
async fn after_a_streamed_start_failover_sends_the_whole_body_to_the_next_upstream() {
    // The first upstream answers 529 once 1 MiB of the body is in, while the agent is
    // still sending; the second gets the whole body.
    let overloaded =
        RawUpstream::start(vec![Reply::Early(MIB, error_answer("529 Overloaded", ""))]).await;
    let (second, second_addr) = start_recorder().await;
    let metrics = Metrics::default();
    let gw = gateway_to(
        &[("overloaded", overloaded.addr), ("second", second_addr)],
        metrics.clone(),
    )
    .await;
    let body = big_body(4 * MIB);
    answered_early_then_completed(
        &gw,
        &overloaded,
        body.clone(),
        "the first upstream answers early",
    )
    .await;
    let seen = second.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].1 == body,
        "the second upstream got the body byte for byte"
    );
    assert_eq!(seen[0].0["x-api-key"], "sk-upstream");
    assert_eq!(
        seen[0].0["content-length"],
        body.len().to_string().as_str(),
        "resent with its length, not chunked"
    );
    let line =
        "rdev_gateway_failovers_total{from=\"overloaded\",to=\"second\",reason=\"status_529\"} 1";
    assert!(metrics.encode().contains(line), "{}", metrics.encode());
    overloaded
        .wait("the skipped request is aborted", |c| c[0].closed)
        .await;
    assert!(
        !overloaded.conns()[0].complete,
        "its body was never completed"
    );

    // A first upstream that is down: the same, from a connection refused.
    let down = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let gw = gateway_to(
        &[("down", down), ("second", second_addr)],
        Metrics::default(),
    )
    .await;
    let grant = gw.grant(GrantSpec::default());
    let response = call(&gw, &grant, body.clone()).await;
    assert_eq!(response.status(), 200);
    let seen = second.seen.lock().unwrap().clone();
    assert!(seen.len() == 2 && seen[1].1 == body, "byte for byte again");
}

#[tokio::test]
async fn a_429_before_the_body_is_in_is_retried_with_the_whole_body_on_the_same_upstream() {
    let limited = RawUpstream::start(vec![
        Reply::Early(
            MIB,
            error_answer("429 Too Many Requests", "retry-after: 0\r\n"),
        ),
        Reply::AfterBody(ok_answer()),
    ])
    .await;
    let gw = gateway_to(&[("limited", limited.addr)], Metrics::default()).await;
    let body = big_body(3 * MIB);
    answered_early_then_completed(&gw, &limited, body.clone(), "the 429 comes early").await;
    limited
        .wait("both requests are over", |c| c.len() == 2 && c[0].closed)
        .await;
    let conns = limited.conns();
    assert!(!conns[0].complete, "the 429's request was aborted");
    assert!(
        conns[1].complete && conns[1].body == body,
        "the retry sent it all"
    );
}

#[tokio::test]
async fn a_large_body_arrives_upstream_byte_for_byte_with_or_without_its_length() {
    let (up, addr) = start_recorder().await;
    let gw = gateway_to(&[("only", addr)], Metrics::default()).await;
    let grant = gw.grant(GrantSpec::default());
    let body = big_body(6 * MIB);
    let sized = call(&gw, &grant, body.clone()).await;
    assert_eq!(sized.status(), 200);
    assert_eq!(sized.bytes().await.unwrap(), JSON_ANSWER.as_bytes());
    // Sent chunked, in uneven pieces.
    let pieces: Vec<Result<Bytes, std::io::Error>> = [0, 1, 70_000, 2 * MIB + 3, body.len()]
        .windows(2)
        .map(|w| Ok(body.slice(w[0]..w[1])))
        .collect();
    let chunked = call(
        &gw,
        &grant,
        reqwest::Body::wrap_stream(futures::stream::iter(pieces)),
    )
    .await;
    assert_eq!(chunked.status(), 200);
    let seen = up.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert!(seen[0].1 == body, "sized: byte for byte");
    assert_eq!(seen[0].0["content-length"], body.len().to_string().as_str());
    assert!(seen[1].1 == body, "chunked: byte for byte");
    assert!(!seen[1].0.contains_key("content-length"));
    assert!(grant.state().wait_settled(Duration::from_secs(5)).await);
    assert_eq!(
        grant.state().by_model()["claude-sonnet-4-5"].calls,
        2,
        "both metered"
    );
}
