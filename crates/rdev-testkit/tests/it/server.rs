//! The scripted model server over real HTTP: JSON and SSE shapes, step counting, the error
//! directive, sleeps, count_tokens and unknown paths.

use std::time::Instant;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use rdev_testkit::ScriptedModel;
use serde_json::{json, Value};

const SCRIPT: &str = "Please work.\n@@write notes/a.txt\nalpha\nbeta\n@@end\n@@bash echo hi > b.txt\n@@reply all finished";

fn request(messages: Value, stream: bool) -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "stream": stream,
        "system": [{"type": "text", "text": "Env:\n - Primary working directory: /srv/work\n"}],
        "tools": [
            {"name": "Write", "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}, "content": {"type": "string"}}}},
            {"name": "Bash", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}, "description": {"type": "string"}}}}
        ],
        "messages": messages,
    })
}

async fn post(model: &ScriptedModel, path: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}{path}", model.base_url()))
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .expect("request reaches the scripted model")
}

async fn sse(model: &ScriptedModel, body: &Value) -> Vec<(String, Value)> {
    let response = post(model, "/v1/messages?beta=true", body).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    response
        .bytes_stream()
        .eventsource()
        .map(|e| {
            let e = e.expect("well-formed SSE");
            (e.event, serde_json::from_str(&e.data).expect("JSON data"))
        })
        .collect()
        .await
}

#[tokio::test]
async fn json_answers_walk_the_script_one_step_per_assistant_turn() {
    let model = ScriptedModel::start().await.unwrap();
    let mut messages = vec![json!({"role": "user", "content": SCRIPT})];

    let first: Value = post(&model, "/v1/messages", &request(json!(messages), false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["type"], "message");
    assert_eq!(first["role"], "assistant");
    assert_eq!(first["model"], "claude-sonnet-4-5");
    assert_eq!(first["stop_reason"], "tool_use");
    let block = &first["content"][0];
    assert_eq!(block["type"], "tool_use");
    assert_eq!(block["name"], "Write");
    assert_eq!(
        block["input"],
        json!({"file_path": "/srv/work/notes/a.txt", "content": "alpha\nbeta\n"})
    );
    assert!(block["id"].as_str().unwrap().starts_with("toolu_"));
    assert!(first["usage"]["input_tokens"].as_u64().unwrap() > 10);
    assert!(first["usage"]["output_tokens"].as_u64().unwrap() > 0);

    messages.push(json!({"role": "assistant", "content": first["content"]}));
    messages.push(json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": block["id"], "content": "ok"}]}));
    let second: Value = post(&model, "/v1/messages", &request(json!(messages), false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(second["content"][0]["name"], "Bash");
    assert_eq!(
        second["content"][0]["input"],
        json!({"command": "echo hi > b.txt", "description": "Run echo hi > b.txt"})
    );

    messages.push(json!({"role": "assistant", "content": second["content"]}));
    messages.push(json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": second["content"][0]["id"], "content": ""}]}));
    let third: Value = post(&model, "/v1/messages", &request(json!(messages), false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(third["stop_reason"], "end_turn");
    assert_eq!(
        third["content"][0],
        json!({"type": "text", "text": "all finished"})
    );

    let steps: Vec<Option<usize>> = model.requests().iter().map(|r| r.step).collect();
    assert_eq!(steps, vec![Some(0), Some(1), Some(2)]);
    let r = &model.requests()[0];
    assert_eq!(r.path, "/v1/messages");
    assert_eq!(r.model.as_deref(), Some("claude-sonnet-4-5"));
    assert!(!r.stream && r.has_tools && !r.side);
    assert_eq!(r.anthropic_version.as_deref(), Some("2023-06-01"));
}

#[tokio::test]
async fn sse_stream_has_the_anthropic_event_sequence_and_chunked_tool_input() {
    let model = ScriptedModel::start().await.unwrap();
    let events = sse(
        &model,
        &request(json!([{"role": "user", "content": SCRIPT}]), true),
    )
    .await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names[..4],
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta"
        ]
    );
    assert_eq!(
        names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str(), "event name matches data.type");
    }
    assert_eq!(events[0].1["message"]["model"], "claude-sonnet-4-5");
    assert_eq!(events[2].1["content_block"]["type"], "tool_use");
    assert_eq!(events[2].1["content_block"]["name"], "Write");
    let partials: Vec<&str> = events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| {
            assert_eq!(d["delta"]["type"], "input_json_delta");
            d["delta"]["partial_json"].as_str().unwrap()
        })
        .collect();
    assert!(partials.len() > 1, "tool input arrives in several chunks");
    let input: Value = serde_json::from_str(&partials.concat()).unwrap();
    assert_eq!(input["file_path"], "/srv/work/notes/a.txt");
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert!(delta["usage"]["output_tokens"].as_u64().unwrap() > 0);
    let recorded = &model.requests()[0];
    assert!(recorded.stream);
    assert_eq!(recorded.query.as_deref(), Some("beta=true"));
}

#[tokio::test]
async fn sse_text_reply_streams_text_deltas_with_end_turn() {
    let model = ScriptedModel::start().await.unwrap();
    let events = sse(
        &model,
        &request(
            json!([{"role": "user", "content": "@@reply hello streaming world"}]),
            true,
        ),
    )
    .await;
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| {
            assert_eq!(d["delta"]["type"], "text_delta");
            d["delta"]["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(text, "hello streaming world");
    assert_eq!(
        events[events.len() - 2].1["delta"]["stop_reason"],
        "end_turn"
    );
}

#[tokio::test]
async fn error_directive_fails_every_attempt_with_anthropic_error_body() {
    let model = ScriptedModel::start().await.unwrap();
    let body = request(
        json!([{"role": "user", "content": "@@error 529 the model is busy"}]),
        true,
    );
    for _ in 0..3 {
        let response = post(&model, "/v1/messages?beta=true", &body).await;
        assert_eq!(response.status(), 529);
        assert!(response.headers().contains_key("request-id"));
        let err: Value = response.json().await.unwrap();
        assert_eq!(
            err,
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "the model is busy"}})
        );
    }
    assert!(model
        .requests()
        .iter()
        .all(|r| r.status == 529 && r.step == Some(0)));
}

#[tokio::test]
async fn steps_running_out_answer_done_and_plain_prompts_are_echoed() {
    let model = ScriptedModel::start().await.unwrap();
    let ran_out = json!([
        {"role": "user", "content": "@@bash true"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "true"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": ""}]}
    ]);
    let done: Value = post(&model, "/v1/messages", &request(ran_out, false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(done["content"][0]["text"], "Done.");
    assert_eq!(done["stop_reason"], "end_turn");

    let plain = json!([{"role": "user", "content": "What is two plus two?\nthanks"}]);
    let echo: Value = post(&model, "/v1/messages", &request(plain, false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        echo["content"][0]["text"],
        "You said: What is two plus two?"
    );
}

#[tokio::test]
async fn side_requests_without_tools_never_consume_steps() {
    let model = ScriptedModel::start().await.unwrap();
    let mut title = request(json!([{"role": "user", "content": SCRIPT}]), false);
    title["tools"] = json!([]);
    title["system"] = json!("You are a title generator. You output ONLY a thread title.");
    let answer: Value = post(&model, "/v1/messages", &title)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer["content"][0]["text"], "Scripted session");
    let recorded = &model.requests()[0];
    assert!(recorded.side);
    assert_eq!(recorded.step, None);
    assert!(!recorded.has_tools);
}

#[tokio::test]
async fn sleep_directive_delays_the_next_step() {
    let model = ScriptedModel::start().await.unwrap();
    let started = Instant::now();
    let answer: Value = post(
        &model,
        "/v1/messages",
        &request(
            json!([{"role": "user", "content": "@@sleep 300\n@@reply late"}]),
            false,
        ),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(answer["content"][0]["text"], "late");
    // A lower bound only: the server must have waited; how much longer it took is not judged.
    assert!(started.elapsed().as_millis() >= 300);
}

#[tokio::test]
async fn count_tokens_and_unknown_paths_answer_in_anthropic_shapes() {
    let model = ScriptedModel::start().await.unwrap();
    let counted: Value = post(
        &model,
        "/v1/messages/count_tokens?beta=true",
        &request(json!([{"role": "user", "content": "hi"}]), false),
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(counted["input_tokens"].as_u64().unwrap() > 0);

    let missing = reqwest::get(format!("{}/v1/models", model.base_url()))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "not_found_error");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/v1/models"));

    let bad = reqwest::Client::new()
        .post(format!("{}/v1/messages", model.base_url()))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let paths: Vec<(String, u16)> = model
        .requests()
        .into_iter()
        .map(|r| (r.path, r.status))
        .collect();
    assert_eq!(
        paths,
        vec![
            ("/v1/messages/count_tokens".to_owned(), 200),
            ("/v1/models".to_owned(), 404),
            ("/v1/messages".to_owned(), 400)
        ]
    );
}

#[tokio::test]
async fn shutdown_frees_the_port() {
    let model = ScriptedModel::start().await.unwrap();
    let port = model.port();
    assert_eq!(model.base_url(), format!("http://127.0.0.1:{port}"));
    model.shutdown();
    let mut refused = false;
    for _ in 0..50 {
        if reqwest::get(format!("http://127.0.0.1:{port}/"))
            .await
            .is_err()
        {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(refused, "server still answers after shutdown");
    let again = ScriptedModel::start_on(port).await.unwrap();
    assert_eq!(again.port(), port);
}

#[tokio::test]
async fn concurrent_conversations_on_one_server_keep_their_own_steps() {
    let model = ScriptedModel::start().await.unwrap();
    let a = json!([
        {"role": "user", "content": "@@bash echo a1\n@@bash echo a2"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "x", "name": "Bash", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x", "content": ""}]}
    ]);
    let b = json!([{"role": "user", "content": "@@bash echo b1\n@@bash echo b2"}]);
    let (a, b) = (request(a, false), request(b, false));
    let (ra, rb) = tokio::join!(
        post(&model, "/v1/messages", &a),
        post(&model, "/v1/messages", &b)
    );
    let (ra, rb): (Value, Value) = (ra.json().await.unwrap(), rb.json().await.unwrap());
    assert_eq!(ra["content"][0]["input"]["command"], "echo a2");
    assert_eq!(rb["content"][0]["input"]["command"], "echo b1");
}
