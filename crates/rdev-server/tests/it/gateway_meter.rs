//! Metering of answers with long lines (docs/gateway.md, "Metering"): a text delta of
//! megabytes passes byte for byte and the usage around it is read; a usage report the
//! meter cannot read is billed at the call's worst case, never as free.

use std::time::Duration;

use axum::{
    body::{Body, Bytes},
    extract::Query,
    response::Response,
    routing::post,
    Router,
};
use rdev_core::MeteredUsage;
use rdev_server::{
    config::UpstreamConfig,
    gateway::{Gateway, GrantSpec},
    metrics::Metrics,
    Config,
};
use tokio::net::TcpListener;

const START: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":50,\"output_tokens\":1}}}\n\n";
const END: &str = "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":30}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

#[derive(serde::Deserialize)]
struct Shape {
    /// Where the long line is: `text` (a text delta) or `usage` (the closing usage report,
    /// padded with JSON white space).
    long: String,
}

/// The answer of the upstream for `long`.
fn answer(long: &str) -> String {
    let pad = " ".repeat(3 * 1024 * 1024);
    match long {
        "text" => format!(
            "{START}event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"delta\":{{\"type\":\"text_delta\",\"text\":\"{}\"}}}}\n\n{END}",
            "x".repeat(3 * 1024 * 1024)
        ),
        _ => format!(
            "{START}event: message_delta\ndata: {{\"type\":\"message_delta\",{pad}\"usage\":{{\"output_tokens\":30}}}}\n\nevent: message_stop\ndata: {{}}\n\n"
        ),
    }
}

async fn start_upstream() -> String {
    let app = Router::new().route(
        "/v1/messages",
        post(|Query(shape): Query<Shape>| async move {
            let text = answer(&shape.long);
            // In network-sized chunks, as a stream arrives.
            let chunks: Vec<Result<Bytes, std::io::Error>> = text
                .as_bytes()
                .chunks(4096)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(futures::stream::iter(chunks)))
                .unwrap()
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

async fn gateway_to(base_url: String) -> Gateway {
    let mut config = Config::default();
    config.gateway.upstreams = vec![UpstreamConfig {
        name: "only".into(),
        base_url,
        api_key_env: Some("TEST_METER_KEY".into()),
        api_key_secret: None,
        auth: Default::default(),
    }];
    let settings = config
        .gateway_settings_from(|k| (k == "TEST_METER_KEY").then(|| "sk-meter".to_owned()))
        .unwrap();
    Gateway::start(settings, None, Metrics::default(), None)
        .await
        .unwrap()
}

/// One streamed call of `long`'s shape: the bytes the agent got, the request's length and
/// the usage the call settled at.
async fn call(gw: &Gateway, long: &str) -> (String, usize, MeteredUsage) {
    let grant = gw.grant(GrantSpec::default());
    let request = "{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":1000,\"stream\":true,\
                   \"messages\":[{\"role\":\"user\",\"content\":\"write\"}]}";
    let got = reqwest::Client::new()
        .post(format!("{}/v1/messages?long={long}", gw.url()))
        .header("x-api-key", grant.token().expose())
        .body(request)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(grant.state().wait_settled(Duration::from_secs(10)).await);
    let by_model = grant.state().by_model();
    assert_eq!(by_model.len(), 1, "{by_model:?}");
    let spent = by_model.into_values().next().unwrap();
    assert_eq!(spent.calls, 1);
    (got, request.len(), spent.usage)
}

#[tokio::test]
async fn a_text_delta_of_megabytes_passes_unchanged_and_the_usage_around_it_is_read() {
    let gw = gateway_to(start_upstream().await).await;
    let (got, _, usage) = call(&gw, "text").await;
    assert!(got == answer("text"), "forwarded byte for byte");
    assert_eq!((usage.input_tokens, usage.output_tokens), (50, 30));
}

#[tokio::test]
async fn a_usage_report_the_meter_cannot_read_is_billed_at_the_calls_worst_case() {
    let gw = gateway_to(start_upstream().await).await;
    let (got, request_len, usage) = call(&gw, "usage").await;
    assert!(got == answer("usage"), "forwarded byte for byte");
    assert_eq!(
        usage,
        MeteredUsage {
            input_tokens: request_len.div_ceil(4) as u64,
            output_tokens: 1000,
            ..MeteredUsage::default()
        },
        "the reservation: input at one token per four request bytes, all of max_tokens"
    );
}
