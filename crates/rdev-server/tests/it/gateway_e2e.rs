//! The model gateway end to end (docs/gateway.md): real `claude` and `opencode` CLIs in
//! rdev's real sandbox, with a network namespace of their own, reaching the scripted model
//! only through the relay and the gateway. The scripted model accepts only the real key,
//! so every answered call proves the swap; what the agent saw is written into its checkout
//! by its Bash tool, pushed, and read back from the remote.

use std::{net::SocketAddr, time::Duration};

use rdev_server::config::UpstreamConfig;
use rdev_testkit::{
    claude_bin, claude_env,
    git::{git, remote_head},
    CallbackReceiver, ProcessEnv, ScriptedModel, StubAnswer, StubUpstream,
};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use crate::common::{self, spawn_app_configured, TestApp};

const REAL_KEY: &str = "sk-ant-real-upstream-key-7d1f09a4b2";

struct World {
    app: TestApp,
    model: ScriptedModel,
    receiver: CallbackReceiver,
    remote: String,
    _dir: tempfile::TempDir,
}

impl World {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.app.client().call(method, path, body).await.1
    }

    async fn build(&self, body: Value) -> String {
        common::start_build(&reqwest::Client::new(), &self.app.address, "site", body).await
    }

    async fn finished(&self, id: &str, timeout: Duration) -> Value {
        let t = common::wait_for_task(
            &reqwest::Client::new(),
            &self.app.address,
            id,
            timeout,
            |t| {
                matches!(
                    t["status"].as_str(),
                    Some("completed" | "failed" | "cancelled")
                )
            },
        )
        .await;
        assert!(t["finished_at"].is_string(), "task never ended: {t}");
        t
    }

    async fn events(&self, id: &str) -> Vec<Value> {
        let text = self
            .app
            .client()
            .get_text(&format!("/tasks/{id}/events"))
            .await;
        // Each stored event is `{"seq","at","kind","payload"}`; the payload is what counts.
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .filter(|e| e["kind"].is_string())
            .map(|e| {
                let mut p = e["payload"].clone();
                p["kind"] = e["kind"].clone();
                p
            })
            .collect()
    }
}

/// Serves a fixed HTTP answer on `addr` to every connection (a host service or a mirror).
async fn http_stub(addr: &str, answer: &'static str) -> SocketAddr {
    let listener = TcpListener::bind(addr).await.unwrap();
    let local = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let body = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = s.write_all(body.as_bytes()).await;
            });
        }
    });
    local
}

async fn world(
    opencode: bool,
    network_allow: Vec<String>,
    tweak: impl FnOnce(&mut rdev_server::Config, &str) + Send + 'static,
) -> World {
    let dir = tempfile::tempdir().unwrap();
    let remote = dir.path().join("site.git").to_string_lossy().into_owned();
    git(&["init", "--bare", "--quiet", "-b", "main", &remote]);
    let model = ScriptedModel::start_with_api_key(REAL_KEY).await.unwrap();
    let receiver = CallbackReceiver::start().await.unwrap();
    let state = dir.path().join("claude-state");
    // The file points OpenCode at the model directly, as an operator's might: rdev must
    // override it with the gateway, or every call fails in the sandbox's own network.
    let oc = opencode.then(|| common::opencode_config(&model.base_url(), REAL_KEY, dir.path()));
    let base = model.base_url();
    let app = spawn_app_configured(None, move |c| {
        c.worker_concurrency = 1;
        c.allow_private_callbacks = true;
        if let Some(oc) = oc {
            c.agents.enabled = vec!["opencode".into()];
            c.agents.opencode = oc;
        }
        let cc = &mut c.agents.claude_code;
        cc.bin = Some(claude_bin());
        cc.config_root = Some(state);
        cc.env = claude_env(&base, REAL_KEY);
        tweak(c, &base);
    })
    .await;
    let w = World {
        app,
        model,
        receiver,
        remote,
        _dir: dir,
    };
    let r = w
        .call(
            reqwest::Method::POST,
            "/projects",
            Some(json!({"name": "site", "repo_url": w.remote, "network_allow": network_allow})),
        )
        .await;
    assert!(r["webhook_secret"].is_string(), "project created: {r}");
    w
}

fn pushed(remote: &str, path: &str) -> String {
    git(&["--git-dir", remote, "show", &format!("main:{path}")])
}

/// The usage the scripted model reported, summed over every answered message.
fn reported(model: &ScriptedModel) -> (u64, u64, usize) {
    let answered: Vec<(u64, u64)> = model.requests().iter().filter_map(|r| r.usage).collect();
    let input = answered.iter().map(|u| u.0).sum();
    let output = answered.iter().map(|u| u.1).sum();
    (input, output, answered.len())
}

/// The model got the real key on every call (it answers nothing else), and task `t`'s
/// metered usage is what the model reported, over at least `min_calls` calls.
fn assert_real_key_upstream_and_metered(w: &World, t: &Value, min_calls: usize) {
    let requests = w.model.requests();
    assert!(
        requests.iter().all(|r| r.status != 401),
        "every call the model saw carried the real key: {requests:?}"
    );
    let (input, output, calls) = reported(&w.model);
    assert!(calls >= min_calls, "{requests:?}");
    assert_eq!(t["usage"]["input_tokens"], input, "metered: {t}");
    assert_eq!(t["usage"]["output_tokens"], output, "metered: {t}");
}

#[tokio::test]
async fn a_sandboxed_claude_holds_no_real_key_reaches_only_the_gateway_and_is_metered() {
    let host_service = http_stub("127.0.0.1:0", "host-service").await;
    // The package mirror lives on another loopback address, vouched for by the operator.
    let mirror = http_stub("127.0.0.2:0", "mirror-ok").await;
    let allowed = format!("packages.example.com:{}", mirror.port());
    let w = world(false, vec![allowed.clone()], |c, _| {
        c.gateway
            .egress_hosts
            .insert("packages.example.com".into(), "127.0.0.2".parse().unwrap());
        c.gateway.egress_allow_addresses = vec!["127.0.0.2".parse().unwrap()];
    })
    .await;
    let curl = "curl -sS -m 5 -o - -w ' http=%{http_code}'";
    let prompt = format!(
        "Look around the network.\n\
@@bash mkdir -p net && touch net/.keep\n\
@@bash echo \"$ANTHROPIC_BASE_URL\" > net/base_url.txt; echo \"$ANTHROPIC_API_KEY\" | cut -c1-8 > net/key_prefix.txt; env | grep -c '{REAL_KEY}' > net/real_key_in_env.txt; cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c '{REAL_KEY}' > net/real_key_in_proc.txt; true\n\
@@bash {curl} --noproxy '*' http://{host_service}/ > net/host_loopback.txt 2>&1; echo \" exit=$?\" >> net/host_loopback.txt\n\
@@bash {curl} --noproxy '*' http://10.0.0.1/ > net/private.txt 2>&1; echo \" exit=$?\" >> net/private.txt\n\
@@bash {curl} --noproxy '*' https://example.com/ > net/public.txt 2>&1; echo \" exit=$?\" >> net/public.txt\n\
@@bash {curl} https://example.com/ > net/public_via_proxy.txt 2>&1; echo \" exit=$?\" >> net/public_via_proxy.txt\n\
@@bash {curl} -p -x \"$HTTPS_PROXY\" http://169.254.169.254/latest/meta-data/ > net/metadata_via_proxy.txt 2>&1; echo \" exit=$?\" >> net/metadata_via_proxy.txt\n\
@@bash {curl} -p -x \"$HTTPS_PROXY\" http://{allowed}/ > net/allowed_via_proxy.txt 2>&1; echo \" exit=$?\" >> net/allowed_via_proxy.txt\n\
@@reply Looked around.",
        host_service = host_service,
    );
    let id = w
        .build(json!({"prompt": prompt, "auto_deploy": true, "callback_url": w.receiver.url()}))
        .await;
    let t = w.finished(&id, Duration::from_secs(180)).await;
    assert_eq!(t["status"], "completed", "{t}");
    let file = |name: &str| pushed(&w.remote, &format!("net/{name}"));

    // The agent holds a token, never the key; the model got the key (it answers nothing
    // else) through the relay's loopback port.
    assert_eq!(file("base_url.txt").trim(), "http://127.0.0.1:17700");
    assert_eq!(file("key_prefix.txt").trim(), "rdev-gw-");
    assert_eq!(file("real_key_in_env.txt").trim(), "0");
    assert_eq!(file("real_key_in_proc.txt").trim(), "0");
    let requests = w.model.requests();
    assert!(requests.iter().any(|r| r.status == 200), "{requests:?}");
    assert!(
        requests.iter().all(|r| r.status != 401),
        "every call the model saw carried the real key: {requests:?}"
    );

    // Egress: nothing but the model and the allow-listed name. Each attempt is printed for
    // the record (docs/gateway.md lists them; `--nocapture` shows them).
    for name in [
        "host_loopback.txt",
        "private.txt",
        "public.txt",
        "public_via_proxy.txt",
        "metadata_via_proxy.txt",
    ] {
        let out = file(name);
        eprintln!("egress attempt {name}: {}", out.trim());
        assert!(!out.contains("exit=0"), "{name}: {out}");
        assert!(!out.contains("host-service"), "{name}: {out}");
    }
    let allowed_out = file("allowed_via_proxy.txt");
    eprintln!(
        "egress attempt allowed_via_proxy.txt: {}",
        allowed_out.trim()
    );
    assert!(
        allowed_out.contains("mirror-ok") && allowed_out.contains("exit=0"),
        "{allowed_out}"
    );
    let events = w.events(&id).await;
    let egress: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["kind"] == "egress")
        .map(|e| {
            (
                format!("{}:{}", e["host"].as_str().unwrap(), e["port"]),
                e["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        egress.contains(&(allowed.clone(), "allowed".into())),
        "{egress:?}"
    );
    assert!(
        egress.contains(&("example.com:443".into(), "refused".into())),
        "{egress:?}"
    );
    assert!(
        egress.contains(&("169.254.169.254:80".into(), "refused".into())),
        "{egress:?}"
    );

    // Metering: what the gateway recorded is what the model reported, in the task, the
    // callback and the metrics.
    let (input, output, calls) = reported(&w.model);
    let usage = &t["usage"];
    assert_eq!(usage["input_tokens"], input, "{usage}");
    assert_eq!(usage["output_tokens"], output, "{usage}");
    assert_eq!(usage["calls"], calls as u64, "{usage}");
    assert!(usage["cost_usd"].as_f64().unwrap() > 0.0, "{usage}");
    assert_eq!(usage["by_attempt"][0]["attempt"], 1);
    assert_eq!(usage["by_attempt"][0]["provider"], "claude-code");
    assert_eq!(t["result"]["usage"]["input_tokens"], input);
    assert_eq!(t["result"]["cost_usd"], usage["cost_usd"]);
    let callbacks = w
        .receiver
        .wait_for_accepted(1, Duration::from_secs(30))
        .await;
    let body: Value = serde_json::from_slice(&callbacks[0].body).unwrap();
    assert_eq!(body["result"]["usage"]["output_tokens"], output);
    assert_eq!(body["cost_usd"], usage["cost_usd"]);
    let metrics = w.call(reqwest::Method::GET, "/metrics", None).await;
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    let line = format!(
        "rdev_model_tokens_total{{project=\"site\",provider=\"claude-code\",model=\"{}\",kind=\"input\"}} {input}",
        requests.iter().find_map(|r| r.model.clone()).unwrap()
    );
    assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
}

#[tokio::test]
async fn a_tiny_max_cost_ends_the_build_budget_exceeded_with_nothing_pushed() {
    let w = world(false, vec![], |_, _| {}).await;
    let before = remote_head(&w.remote);
    let id = w
        .build(json!({
            "prompt": "@@write a.txt\nfirst\n@@end\n@@write b.txt\nsecond\n@@end\n@@reply done",
            "auto_deploy": true, "max_cost_usd": 0.000001, "callback_url": w.receiver.url()
        }))
        .await;
    let t = w.finished(&id, Duration::from_secs(120)).await;
    assert_eq!(t["status"], "failed", "{t}");
    let error = t["error"].as_str().unwrap();
    assert!(error.starts_with("budget_exceeded"), "{error}");
    assert_eq!(remote_head(&w.remote), before, "nothing pushed");
    assert_eq!(
        t["attempts"].as_array().unwrap().len(),
        1,
        "not retried: {t}"
    );
    assert!(t["usage"]["cost_usd"].as_f64().unwrap() >= 0.000001, "{t}");
    let callbacks = w
        .receiver
        .wait_for_accepted(1, Duration::from_secs(30))
        .await;
    let body: Value = serde_json::from_slice(&callbacks[0].body).unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("budget_exceeded"),
        "{body}"
    );
    let events = w.events(&id).await;
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "budget_exceeded" && e["budget"]["max_cost_usd"] == 0.000001),
        "a budget_exceeded event: {events:?}"
    );
}

/// The attempt's gateway token is a value push protection knows: a build that writes it
/// into its checkout is refused with `secret_in_commit`, and nothing is pushed.
#[tokio::test]
async fn a_build_committing_its_gateway_token_is_refused_by_push_protection() {
    let w = world(false, vec![], |_, _| {}).await;
    let id = w
        .build(json!({
            "prompt": "@@bash echo \"$ANTHROPIC_API_KEY\" > token.txt\n@@reply saved",
            "auto_deploy": true,
        }))
        .await;
    let t = w.finished(&id, Duration::from_secs(120)).await;
    assert_eq!(t["status"], "failed", "{t}");
    let error = t["error"].as_str().unwrap();
    assert!(error.starts_with("secret_in_commit: "), "{error}");
    assert!(
        error.contains("token.txt:1 known_value gateway token (plain)"),
        "{error}"
    );
    assert_eq!(remote_head(&w.remote), None, "nothing was pushed");
    assert_eq!(
        t["attempts"].as_array().unwrap().len(),
        1,
        "not retried: {t}"
    );
}

#[tokio::test]
async fn with_the_first_upstreams_down_or_overloaded_the_build_completes_through_the_last() {
    let down = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let busy = StubUpstream::start(vec![StubAnswer::error(529, None)])
        .await
        .unwrap();
    let busy_url = busy.base_url();
    // Two scripted models: the first as a backup that is never needed, in last place the
    // one that answers. Keys by reference, as configured upstreams have them.
    let _env = ProcessEnv::set("RDEV_TEST_GATEWAY_KEY", REAL_KEY).await;
    let w = world(false, vec![], move |c, model| {
        let upstream = |name: &str, url: String| UpstreamConfig {
            name: name.into(),
            base_url: url,
            api_key_env: Some("RDEV_TEST_GATEWAY_KEY".into()),
            api_key_secret: None,
            auth: Default::default(),
        };
        c.gateway.upstreams = vec![
            upstream("down", format!("http://{down}")),
            upstream("busy", busy_url),
            upstream("scripted", model.to_owned()),
        ];
    })
    .await;
    let id = w
        .build(json!({"prompt": "@@write ok.txt\nthrough the third\n@@end\n@@reply done", "auto_deploy": true}))
        .await;
    let t = w.finished(&id, Duration::from_secs(120)).await;
    assert_eq!(t["status"], "completed", "{t}");
    assert_eq!(pushed(&w.remote, "ok.txt").trim(), "through the third");
    assert!(busy.hits() >= 1);
    let events = w.events(&id).await;
    let failovers: Vec<(String, String, String)> = events
        .iter()
        .filter(|e| e["kind"] == "gateway_failover")
        .map(|e| {
            (
                e["from"].as_str().unwrap().to_owned(),
                e["to"].as_str().unwrap().to_owned(),
                e["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        failovers.contains(&("down".into(), "busy".into(), "connect".into())),
        "{failovers:?}"
    );
    assert!(
        failovers.contains(&("busy".into(), "scripted".into(), "status_529".into())),
        "{failovers:?}"
    );
    let metrics = w.call(reqwest::Method::GET, "/metrics", None).await;
    assert!(
        metrics.as_str().unwrap_or_default().contains(
            "rdev_gateway_failovers_total{from=\"busy\",to=\"scripted\",reason=\"status_529\"}"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_shared_opencode_servers_calls_are_attributed_to_their_task_by_session() {
    let w = world(true, vec!["packages.example.com:443".into()], |_, _| {}).await;
    let id = w
        .build(json!({
            "prompt": "@@bash echo \"$ANTHROPIC_BASE_URL\" > base.txt; env | grep -c 'sk-ant-real' > real.txt; true\n@@reply done",
            "auto_deploy": true
        }))
        .await;
    let t = w.finished(&id, Duration::from_secs(300)).await;
    assert_eq!(t["status"], "completed", "{t}");
    assert_eq!(
        pushed(&w.remote, "base.txt").trim(),
        "http://127.0.0.1:17700/v1"
    );
    assert_eq!(pushed(&w.remote, "real.txt").trim(), "0");
    // Title and turns.
    assert_real_key_upstream_and_metered(&w, &t, 2);
    assert_eq!(t["usage"]["by_attempt"][0]["provider"], "opencode");
    // The project's allow-list is not applied to OpenCode, and the task says so.
    let events = w.events(&id).await;
    let egress: Vec<&Value> = events.iter().filter(|e| e["kind"] == "egress").collect();
    assert_eq!(egress.len(), 1, "{events:?}");
    assert_eq!(egress[0]["outcome"], "not_applied");
    assert_eq!(egress[0]["allow"][0], "packages.example.com:443");
}

#[tokio::test]
async fn a_claude_in_a_kubectl_pod_reaches_the_model_through_the_gateway_with_a_token() {
    // The "pod" is this machine (scripts/kubectl-local); it reaches the gateway's loopback
    // listener, as a real pod would reach it through the operator's tunnel.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gateway_url = format!("http://127.0.0.1:{port}");
    let url = gateway_url.clone();
    let w = world(false, vec![], move |c, _| {
        c.gateway.listen = ([127, 0, 0, 1], port).into();
        let kubectl = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/kubectl-local");
        c.agents.claude_code.transport = rdev_agents::claude_code::TransportConfig::Kubectl(
            rdev_agents::claude_code::KubectlConfig {
                kubectl_bin: kubectl.into(),
                pod: "agent-0".into(),
                namespace: None,
                container: None,
                gateway_url: Some(url),
            },
        );
    })
    .await;
    let id = w
        .build(json!({
            "prompt": format!("@@bash echo \"$ANTHROPIC_BASE_URL\" > base.txt; env | grep -c '{REAL_KEY}' > real.txt; true\n@@reply done"),
            "auto_deploy": true
        }))
        .await;
    let t = w.finished(&id, Duration::from_secs(180)).await;
    assert_eq!(t["status"], "completed", "{t}");
    assert_eq!(pushed(&w.remote, "base.txt").trim(), gateway_url);
    assert_eq!(
        pushed(&w.remote, "real.txt").trim(),
        "0",
        "the pod got the real key"
    );
    assert_real_key_upstream_and_metered(&w, &t, 1);
}
