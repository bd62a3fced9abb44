//! The model gateway on its own (docs/gateway.md), against upstreams that are real HTTP
//! servers on loopback: a fixed one whose bytes a test controls, and the scripted model.
//! Byte-faithful forwarding (JSON and SSE, streamed as it comes), the token swap, 401s,
//! metering, budgets under parallel calls, failover, and the egress proxy's decisions.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Router,
};
use futures::StreamExt;
use rdev_core::{Budget, SecretString};
use rdev_server::{
    config::UpstreamConfig,
    gateway::{Gateway, GrantSpec},
    metrics::Metrics,
    Config,
};
use rdev_testkit::{StubAnswer, StubUpstream};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::Notify,
};

const REAL_KEY: &str = "sk-real-upstream-key-0123456789";

/// One SSE stream in the shape Anthropic sends, with a ping and uneven chunks.
const SSE: &[&str] = &[
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude-sonnet-4-5-20250929\",\"usage\":{\"input_tokens\":1200,\"output_tokens\":1,\"cache_read_input_tokens\":300,\"cache_creation_input_tokens\":40,\"cache_creation\":{\"ephemeral_5m_input_tokens\":30,\"ephemeral_1h_input_tokens\":10}}}}\n\n",
    "event: ping\ndata: {\"type\": \"ping\"}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel",
    "lo\"}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":7}}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":21}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
];

const JSON_ANSWER: &str = "{\"id\":\"msg_2\",\"type\":\"message\",\"model\":\"claude-haiku-4-5\",\"content\":[{\"type\":\"text\",\"text\":\"ok\"}],\"usage\":{\"input_tokens\":11,\"output_tokens\":22}}";

/// What the fixed upstream saw.
#[derive(Debug, Clone)]
struct Seen {
    headers: HeaderMap,
    body: Bytes,
    path_and_query: String,
}

#[derive(Clone, Default)]
struct Upstream {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Holds the stream after its first chunk until notified.
    gate: Option<Arc<Notify>>,
    /// Status to answer with instead.
    status: Option<u16>,
    /// Each answer waits for a permit.
    hold: Option<Arc<tokio::sync::Semaphore>>,
}

async fn upstream_handler(
    State(u): State<Upstream>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    u.seen.lock().unwrap().push(Seen {
        headers: headers.clone(),
        body: body.clone(),
        path_and_query: uri.path_and_query().unwrap().to_string(),
    });
    if let Some(hold) = &u.hold {
        hold.acquire().await.unwrap().forget();
    }
    if let Some(status) = u.status {
        let body = format!(
            "{{\"type\":\"error\",\"error\":{{\"type\":\"overloaded_error\",\"message\":\"fixed {status}\"}}}}"
        );
        return (StatusCode::from_u16(status).unwrap(), body).into_response();
    }
    let stream: bool = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["stream"]
        .as_bool()
        .unwrap_or(false);
    if !stream {
        return (
            [
                ("content-type", "application/json"),
                ("request-id", "req_fixed"),
            ],
            JSON_ANSWER,
        )
            .into_response();
    }
    let gate = u.gate.clone();
    let chunks = futures::stream::iter(SSE.iter().enumerate()).then(move |(i, c)| {
        let gate = gate.clone();
        async move {
            if i == 1 {
                if let Some(g) = gate {
                    g.notified().await;
                }
            }
            Ok::<Bytes, std::io::Error>(Bytes::from_static(c.as_bytes()))
        }
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("request-id", "req_fixed_sse")
        .body(Body::from_stream(chunks))
        .unwrap()
}

async fn start_upstream(u: Upstream) -> SocketAddr {
    let app = Router::new()
        .route("/v1/messages", post(upstream_handler))
        .route("/v1/messages/count_tokens", post(upstream_handler))
        .with_state(u);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn upstream(name: &str, addr: SocketAddr) -> UpstreamConfig {
    UpstreamConfig {
        name: name.into(),
        base_url: format!("http://{addr}"),
        api_key_env: Some("TEST_UPSTREAM_KEY".into()),
        api_key_secret: None,
        auth: Default::default(),
    }
}

async fn gateway_with(tweak: impl FnOnce(&mut Config)) -> Gateway {
    let mut config = Config::default();
    config.gateway.first_byte_timeout_secs = 2.0;
    config.gateway.connect_timeout_secs = 1.0;
    tweak(&mut config);
    let settings = config
        .gateway_settings_from(|k| (k == "TEST_UPSTREAM_KEY").then(|| REAL_KEY.to_owned()))
        .unwrap();
    Gateway::start(settings, None, Metrics::default(), None)
        .await
        .unwrap()
}

fn body(stream: bool, max_tokens: u64) -> String {
    format!(
        "{{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":{max_tokens},\"stream\":{stream},\
         \"messages\":[{{\"role\":\"user\",\"content\":\"hi \\u00e9\"}}]}}"
    )
}

async fn call(gw: &Gateway, token: &str, stream: bool) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/messages?beta=true", gw.url()))
        .header("x-api-key", token)
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "interleaved-thinking-2025-05-14")
        .header("content-type", "application/json")
        .body(body(stream, 64))
        .send()
        .await
        .unwrap()
}

/// A call as a shared agent server makes it: the server token and a session header.
async fn call_as_server(gw: &Gateway, session: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/messages", gw.url()))
        .header("x-api-key", gw.server_token().expose())
        .header("x-session-id", session)
        .body(body(false, 1))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn streams_are_forwarded_byte_for_byte_as_they_come_with_the_real_key_in_place_of_the_token()
{
    let gate = Arc::new(Notify::new());
    let up = Upstream {
        gate: Some(Arc::clone(&gate)),
        ..Upstream::default()
    };
    let addr = start_upstream(up.clone()).await;
    let gw = gateway_with(|c| c.gateway.upstreams = vec![upstream("only", addr)]).await;
    let grant = gw.grant(GrantSpec::default());
    let token = grant.token().expose().to_owned();

    let response = call(&gw, &token, true).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["request-id"], "req_fixed_sse");
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut stream = response.bytes_stream();
    // The first chunk arrives while the upstream still holds the rest: nothing is buffered.
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the first event arrives before the stream ends")
        .unwrap()
        .unwrap();
    assert_eq!(first, SSE[0].as_bytes());
    gate.notify_one();
    let mut all = first.to_vec();
    while let Some(chunk) = stream.next().await {
        all.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(all, SSE.concat().as_bytes(), "byte for byte");

    let seen = up.seen.lock().unwrap().clone();
    let s = &seen[0];
    assert_eq!(s.path_and_query, "/v1/messages?beta=true");
    assert_eq!(
        s.body,
        body(true, 64).as_bytes(),
        "the request body is untouched"
    );
    assert_eq!(s.headers["x-api-key"], REAL_KEY);
    assert_eq!(
        s.headers["anthropic-beta"],
        "interleaved-thinking-2025-05-14"
    );
    assert!(
        !format!("{:?}", s.headers).contains(&token),
        "the token stays at the gateway"
    );

    // Metered from the stream: input and cache from message_start, output from the last
    // (cumulative) message_delta.
    assert!(grant.state().wait_settled(Duration::from_secs(5)).await);
    let by_model = grant.state().by_model();
    let m = &by_model["claude-sonnet-4-5-20250929"];
    assert_eq!(m.calls, 1);
    assert_eq!(
        (
            m.usage.input_tokens,
            m.usage.output_tokens,
            m.usage.cache_read_input_tokens,
            m.usage.cache_creation_input_tokens,
            m.usage.cache_creation_1h_input_tokens
        ),
        (1200, 21, 300, 40, 10)
    );
    // Sonnet 4.5: $3 in, $15 out, reads $0.30, 5-minute writes $3.75, 1-hour writes $6.
    let want = (1200.0 * 3.0 + 21.0 * 15.0 + 300.0 * 0.3 + 30.0 * 3.75 + 10.0 * 6.0) / 1e6;
    assert!(
        (m.cost_usd - want).abs() < 1e-12,
        "{} != {want}",
        m.cost_usd
    );
}

#[tokio::test]
async fn json_answers_and_token_counting_pass_through_unchanged() {
    let up = Upstream::default();
    let addr = start_upstream(up.clone()).await;
    let gw = gateway_with(|c| c.gateway.upstreams = vec![upstream("only", addr)]).await;
    let grant = gw.grant(GrantSpec::default());
    let response = call(&gw, grant.token().expose(), false).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["request-id"], "req_fixed");
    assert_eq!(response.bytes().await.unwrap(), JSON_ANSWER.as_bytes());
    assert!(grant.state().wait_settled(Duration::from_secs(5)).await);
    let m = grant.state().by_model()["claude-haiku-4-5"];
    assert_eq!((m.usage.input_tokens, m.usage.output_tokens), (11, 22));

    let counted = reqwest::Client::new()
        .post(format!("{}/v1/messages/count_tokens", gw.url()))
        .header("x-api-key", grant.token().expose())
        .body(body(false, 1))
        .send()
        .await
        .unwrap();
    assert_eq!(counted.status(), 200);
    assert_eq!(
        grant.state().by_model()["claude-haiku-4-5"].calls,
        1,
        "counting tokens is not a model call"
    );
}

#[tokio::test]
async fn unknown_missing_and_finished_tokens_get_401_and_reach_no_upstream() {
    let up = Upstream::default();
    let addr = start_upstream(up.clone()).await;
    let gw = gateway_with(|c| c.gateway.upstreams = vec![upstream("only", addr)]).await;
    let grant = gw.grant(GrantSpec::default());
    let token = grant.token().expose().to_owned();
    assert_eq!(call(&gw, &token, false).await.status(), 200);
    drop(grant);
    for t in [token.as_str(), "rdev-gw-guessed", REAL_KEY] {
        let r = call(&gw, t, false).await;
        assert_eq!(r.status(), 401, "{t}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["type"], "authentication_error");
    }
    let none = reqwest::Client::new()
        .post(format!("{}/v1/messages", gw.url()))
        .body(body(false, 1))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 401);
    // The shared server's token needs a session of a live attempt.
    assert_eq!(call_as_server(&gw, "ses_nobody").await.status(), 401);
    assert_eq!(
        up.seen.lock().unwrap().len(),
        1,
        "only the valid call went upstream"
    );
    // Other paths are not forwarded at all.
    let other = reqwest::get(format!("{}/v1/organizations/me", gw.url()))
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
}

#[tokio::test]
async fn a_shared_servers_calls_count_for_the_attempt_their_session_belongs_to() {
    let up = Upstream::default();
    let addr = start_upstream(up.clone()).await;
    let gw = gateway_with(|c| c.gateway.upstreams = vec![upstream("only", addr)]).await;
    let grant = gw.grant(GrantSpec::default());
    grant.model_grant().sessions.attribute("ses_mine");
    assert_eq!(call_as_server(&gw, "ses_mine").await.status(), 200);
    assert!(grant.state().wait_settled(Duration::from_secs(5)).await);
    assert_eq!(grant.state().by_model()["claude-haiku-4-5"].calls, 1);
}

#[tokio::test]
async fn parallel_calls_at_the_cap_do_not_all_pass_and_spent_budgets_get_a_non_retryable_402() {
    let hold = Arc::new(tokio::sync::Semaphore::new(0));
    let up = Upstream {
        hold: Some(Arc::clone(&hold)),
        ..Upstream::default()
    };
    let addr = start_upstream(up.clone()).await;
    let gw = gateway_with(|c| c.gateway.upstreams = vec![upstream("only", addr)]).await;
    // Each call reserves its worst case, ~1k output tokens of Sonnet at $15/M = $0.015:
    // a $0.02 budget admits two calls in flight, not twenty. The upstream holds every
    // answer, so nothing settles while the twenty are decided.
    let grant = gw.grant(GrantSpec {
        budget: Budget {
            max_cost_usd: Some(0.02),
            max_tokens: None,
        },
        ..GrantSpec::default()
    });
    let token = grant.token().expose().to_owned();
    let mut calls: futures::stream::FuturesUnordered<_> = (0..20)
        .map(|_| {
            let (url, token) = (gw.url(), token.clone());
            tokio::spawn(async move {
                reqwest::Client::new()
                    .post(format!("{url}/v1/messages"))
                    .header("x-api-key", token)
                    .body(body(false, 1000))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut refused = 0;
    while refused < 18 {
        let status = tokio::time::timeout(Duration::from_secs(10), calls.next())
            .await
            .expect("18 calls are refused while two are held upstream")
            .unwrap()
            .unwrap();
        assert_eq!(
            status, 429,
            "retryable: the two in flight may settle cheaply"
        );
        refused += 1;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while up.seen.lock().unwrap().len() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(up.seen.lock().unwrap().len(), 2, "two calls went upstream");
    hold.add_permits(20);
    while let Some(status) = calls.next().await {
        assert_eq!(status.unwrap(), 200);
    }
    assert!(grant.state().wait_settled(Duration::from_secs(5)).await);
    // What settled is far below the cap (the fixed answer is cheap), so calls go on...
    assert!(!grant.state().is_exhausted());
    assert_eq!(call(&gw, &token, false).await.status(), 200);
    // ...until spending reaches it.
    let small = gw.grant(GrantSpec {
        budget: Budget {
            max_cost_usd: None,
            max_tokens: Some(10),
        },
        ..GrantSpec::default()
    });
    assert_eq!(call(&gw, small.token().expose(), false).await.status(), 200);
    assert!(small.state().wait_settled(Duration::from_secs(5)).await);
    assert!(small.state().is_exhausted(), "33 tokens used of 10");
    tokio::time::timeout(Duration::from_secs(1), small.exhausted())
        .await
        .expect("the worker is woken");
    let refused = call(&gw, small.token().expose(), false).await;
    assert_eq!(refused.status(), 402);
    let v: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(v["error"]["type"], "billing_error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("budget_exceeded"));
}

async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

#[tokio::test]
async fn an_upstream_that_is_down_or_overloaded_is_skipped_before_the_first_byte() {
    let good = Upstream::default();
    let good_addr = start_upstream(good.clone()).await;
    let overloaded = Upstream {
        status: Some(529),
        ..Upstream::default()
    };
    let overloaded_addr = start_upstream(overloaded.clone()).await;
    let down = closed_port().await;
    let metrics = Metrics::default();
    let mut config = Config::default();
    config.gateway.upstreams = vec![
        upstream("down", down),
        upstream("overloaded", overloaded_addr),
        upstream("good", good_addr),
    ];
    let settings = config
        .gateway_settings_from(|_| Some(REAL_KEY.to_owned()))
        .unwrap();
    let gw = Gateway::start(settings, None, metrics.clone(), None)
        .await
        .unwrap();
    let grant = gw.grant(GrantSpec::default());
    let r = call(&gw, grant.token().expose(), true).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), SSE.concat().as_bytes());
    assert_eq!(overloaded.seen.lock().unwrap().len(), 1);
    assert_eq!(good.seen.lock().unwrap().len(), 1);
    let text = metrics.encode();
    for line in [
        "rdev_gateway_failovers_total{from=\"down\",to=\"overloaded\",reason=\"connect\"} 1",
        "rdev_gateway_failovers_total{from=\"overloaded\",to=\"good\",reason=\"status_529\"} 1",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }

    // The last upstream's answer goes to the agent as it is.
    let mut config = Config::default();
    config.gateway.upstreams = vec![
        upstream("down", down),
        upstream("overloaded", overloaded_addr),
    ];
    let settings = config.gateway_settings_from(|_| Some("k".into())).unwrap();
    let gw = Gateway::start(settings, None, Metrics::default(), None)
        .await
        .unwrap();
    let grant = gw.grant(GrantSpec::default());
    assert_eq!(call(&gw, grant.token().expose(), false).await.status(), 529);
}

#[tokio::test]
async fn a_429_is_retried_on_the_same_upstream_after_retry_after() {
    // An upstream that answers 429 once (retry-after: 1), then a message.
    let limited = StubUpstream::start(vec![
        StubAnswer::error(429, Some("1")),
        StubAnswer {
            status: 200,
            retry_after: None,
            body: JSON_ANSWER,
        },
    ])
    .await
    .unwrap();
    let addr: SocketAddr = limited.base_url()[7..].parse().unwrap();
    let backup = Upstream::default();
    let backup_addr = start_upstream(backup.clone()).await;
    let gw = gateway_with(|c| {
        c.gateway.upstreams = vec![upstream("limited", addr), upstream("backup", backup_addr)]
    })
    .await;
    let grant = gw.grant(GrantSpec::default());
    let started = std::time::Instant::now();
    let r = call(&gw, grant.token().expose(), false).await;
    assert_eq!(r.status(), 200);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "waited for retry-after"
    );
    assert_eq!(limited.hits(), 2, "retried on the same upstream");
    assert!(backup.seen.lock().unwrap().is_empty());
}

/// Sends a CONNECT through the gateway's TCP listener; returns the status line.
async fn connect(
    gw: &Gateway,
    token: Option<&str>,
    target: &str,
) -> (String, tokio::net::TcpStream) {
    let addr = gw.url().trim_start_matches("http://").to_owned();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token
        .map(|t| {
            use base64::Engine;
            let b = base64::engine::general_purpose::STANDARD.encode(format!("rdev:{t}"));
            format!("Proxy-Authorization: Basic {b}\r\n")
        })
        .unwrap_or_default();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth}\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        if s.read(&mut b).await.unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    (text.lines().next().unwrap_or_default().to_owned(), s)
}

#[tokio::test]
async fn the_egress_proxy_tunnels_only_to_allow_listed_names_that_resolve_to_allowed_addresses() {
    // The "package mirror": an echo server on loopback, allowed by name with its address
    // vouched for by the operator.
    let mirror = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let mirror_port = mirror.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = mirror.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4];
                s.read_exact(&mut buf).await.unwrap();
                s.write_all(&buf).await.unwrap();
            });
        }
    });
    let gw = gateway_with(|c| {
        let g = &mut c.gateway;
        g.egress_hosts
            .insert("packages.example.com".into(), "127.0.0.2".parse().unwrap());
        g.egress_hosts
            .insert("sneaky.example.com".into(), "10.1.2.3".parse().unwrap());
        g.egress_allow_addresses = vec!["127.0.0.2".parse().unwrap()];
    })
    .await;
    let grant = gw.grant(GrantSpec {
        network_allow: vec![
            ("packages.example.com".into(), mirror_port),
            ("sneaky.example.com".into(), 443),
            ("localhost".into(), 443),
        ],
        ..GrantSpec::default()
    });
    let token = grant.token().expose().to_owned();
    let allowed = format!("packages.example.com:{mirror_port}");
    let (status, mut tunnel) = connect(&gw, Some(&token), &allowed).await;
    assert!(status.contains(" 200"), "{status}");
    tunnel.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    tunnel.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping");

    for (target, why) in [
        ("127.0.0.1:22".to_owned(), "an IP address"),
        ("[::1]:443".to_owned(), "an IP address"),
        (
            "example.com:443".to_owned(),
            "not in the project's network_allow",
        ),
        (
            format!("packages.example.com:{}", mirror_port + 1),
            "not in",
        ),
        ("sneaky.example.com:443".to_owned(), "10.1.2.3"),
        ("localhost:443".to_owned(), "loopback, private"),
    ] {
        let (status, _) = connect(&gw, Some(&token), &target).await;
        assert!(status.contains(" 403"), "{target}: {status}");
        let _ = why;
    }
    let (status, _) = connect(&gw, None, &allowed).await;
    assert!(status.contains(" 407"), "{status}");
    drop(grant);
    let (status, _) = connect(&gw, Some(&token), &allowed).await;
    assert!(
        status.contains(" 407"),
        "a finished attempt's token: {status}"
    );
}

#[tokio::test]
async fn without_upstreams_the_claude_code_env_names_the_upstream_and_its_key() {
    let up = Upstream::default();
    let addr = start_upstream(up.clone()).await;
    let mut config = Config::default();
    config.agents.claude_code.env.insert(
        "ANTHROPIC_BASE_URL".into(),
        SecretString::new(format!("http://{addr}")),
    );
    config
        .agents
        .claude_code
        .env
        .insert("ANTHROPIC_API_KEY".into(), SecretString::new(REAL_KEY));
    let gw = Gateway::start(
        config.gateway_settings_from(|_| None).unwrap(),
        None,
        Metrics::default(),
        None,
    )
    .await
    .unwrap();
    let grant = gw.grant(GrantSpec::default());
    assert_eq!(call(&gw, grant.token().expose(), false).await.status(), 200);
    assert_eq!(up.seen.lock().unwrap()[0].headers["x-api-key"], REAL_KEY);
}
