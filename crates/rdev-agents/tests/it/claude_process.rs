//! Process handling of the Claude Code adapter, driven by stand-in shell scripts in place
//! of the CLI (the real CLI runs in `claude_cli.rs`): cancel before/during/after a run,
//! timeouts, orphans (including detached grandchildren), stdin/argv/env hygiene, stderr in
//! failures, long lines through a real pipe, and the kubectl transport via
//! `scripts/kubectl-local`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rdev_agents::{
    claude_code::{ClaudeCodeAgent, ClaudeCodeConfig, KubectlConfig, TransportConfig},
    sandbox::{SandboxConfig, SandboxMode},
};
use rdev_core::{
    AgentError, AgentEvent, AgentRequest, AgentResult, AgentStatus, CodeAgent, SecretString,
};
use rdev_testkit::ProcessEnv;
use tempfile::TempDir;
use tokio::sync::mpsc;

const INIT: &str = r#"{"type":"system","subtype":"init","session_id":"sess-1","model":"stand-in","tools":["Bash"]}"#;
const RESULT: &str = r#"{"type":"result","subtype":"success","is_error":false,"session_id":"sess-1","total_cost_usd":0.01,"usage":{"input_tokens":5,"output_tokens":2},"num_turns":1,"result":"all done"}"#;

struct Fixture {
    dir: TempDir,
}

impl Fixture {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes an executable `sh` script standing in for the CLI.
    fn script(&self, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.path(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Unsandboxed: these stand-ins report their pids with `$$`, which inside the
    /// sandbox's PID namespace are not the host's. Supervision is the same either way; the
    /// sandboxed family kill is checked by crates/rdev-server/tests/it/escape.rs and
    /// `sandboxed_stand_in_sees_only_its_task` below.
    fn config(&self, bin: &Path) -> ClaudeCodeConfig {
        ClaudeCodeConfig {
            bin: Some(bin.to_path_buf()),
            config_root: Some(self.path("config-root")),
            kill_grace: Duration::from_millis(500),
            sandbox: SandboxConfig {
                mode: SandboxMode::None,
                ..SandboxConfig::default()
            },
            ..ClaudeCodeConfig::default()
        }
    }

    fn request(&self, prompt: &str, timeout_secs: u64) -> AgentRequest {
        AgentRequest::new(prompt, self.dir.path(), Duration::from_secs(timeout_secs))
    }
}

/// Runs to the end, collecting every event.
async fn run(
    agent: &ClaudeCodeAgent,
    req: AgentRequest,
) -> (Result<AgentResult, AgentError>, Vec<AgentEvent>) {
    let (tx, mut rx) = mpsc::channel(16);
    let collect = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Some(e) = rx.recv().await {
            all.push(e);
        }
        all
    });
    let result = agent.execute(req, tx).await;
    (result, collect.await.unwrap())
}

/// Whether `pid` is gone (or a zombie waiting for init to reap it).
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Waits until `file` lists `n` pids (the script writes them once its children run).
async fn wait_for_pids(file: &Path, n: usize) -> Vec<u32> {
    for _ in 0..600 {
        if let Ok(text) = std::fs::read_to_string(file) {
            let pids: Vec<u32> = text
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect();
            if pids.len() >= n {
                return pids;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the stand-in never wrote {n} pids to {}", file.display());
}

/// A stand-in that prints `init`, starts a grandchild `sleep` in its group and one in a
/// new session (as the CLI's detached tool shells are), records all pids, then blocks.
fn family_script(f: &Fixture) -> PathBuf {
    let pids = f.path("pids");
    f.script(
        "claude-family",
        &format!(
            r#"echo '{INIT}'
sleep 1000 &
g1=$!
setsid sleep 1001 &
g2=$!
echo "$$ $g1 $g2" > '{pids}'
wait"#,
            pids = pids.display()
        ),
    )
}

#[tokio::test]
async fn cancel_during_run_kills_the_whole_family_including_detached_grandchildren() {
    let f = Fixture::new();
    let agent = Arc::new(ClaudeCodeAgent::new(f.config(&family_script(&f))).unwrap());
    let req = f.request("go", 600);
    let run_id = req.run_id;
    let task = tokio::spawn({
        let agent = Arc::clone(&agent);
        async move { run(&agent, req).await }
    });
    let pids = wait_for_pids(&f.path("pids"), 3).await;
    assert!(pids.iter().all(|p| !is_dead(*p)), "all alive before cancel");
    agent.cancel(run_id).await.unwrap();
    let (result, events) = task.await.unwrap();
    let result = result.unwrap();
    assert_eq!(result.status, AgentStatus::Cancelled);
    assert_eq!(result.session_id.as_deref(), Some("sess-1"));
    assert!(
        matches!(events.last(), Some(AgentEvent::Completed(r)) if r.status == AgentStatus::Cancelled)
    );
    for pid in pids {
        assert!(is_dead(pid), "pid {pid} survived the cancel");
    }
    // A cancel after the end is a no-op: a run reusing the id is not cancelled before it
    // starts, it runs (into its timeout, as the stand-in blocks).
    agent.cancel(run_id).await.unwrap();
    let mut req = f.request("go", 1);
    req.run_id = run_id;
    let (result, _) = run(&agent, req).await;
    assert_eq!(result.unwrap().status, AgentStatus::TimedOut);
}

#[tokio::test]
async fn timeout_kills_the_family_and_reports_timed_out() {
    let f = Fixture::new();
    let agent = ClaudeCodeAgent::new(f.config(&family_script(&f))).unwrap();
    let (result, _) = run(&agent, f.request("go", 1)).await;
    let result = result.unwrap();
    assert_eq!(result.status, AgentStatus::TimedOut);
    assert!(
        result.output.contains("timed out after 1s"),
        "{}",
        result.output
    );
    for pid in wait_for_pids(&f.path("pids"), 3).await {
        assert!(is_dead(pid), "pid {pid} survived the timeout");
    }
}

#[tokio::test]
async fn cancel_before_start_ends_at_once_without_running_the_cli() {
    let f = Fixture::new();
    let marker = f.path("ran");
    let bin = f.script(
        "claude-marker",
        &format!("touch '{}'; echo '{RESULT}'", marker.display()),
    );
    let agent = ClaudeCodeAgent::new(f.config(&bin)).unwrap();
    let req = f.request("go", 60);
    agent.cancel(req.run_id).await.unwrap();
    let (result, events) = run(&agent, req).await;
    assert_eq!(result.unwrap().status, AgentStatus::Cancelled);
    assert!(
        matches!(events.as_slice(), [AgentEvent::Completed(r)] if r.status == AgentStatus::Cancelled)
    );
    assert!(
        !marker.exists(),
        "the CLI must not start after an early cancel"
    );
    // Another run on the same agent is unaffected.
    let (result, _) = run(&agent, f.request("go", 60)).await;
    assert_eq!(result.unwrap().status, AgentStatus::Success);
    assert!(marker.exists());
}

#[tokio::test]
async fn cancel_after_finish_is_a_noop_and_background_jobs_do_not_outlive_the_run() {
    let f = Fixture::new();
    let pids = f.path("pids");
    let bin = f.script(
        "claude-bg",
        &format!(
            "echo '{INIT}'\nsleep 1002 >/dev/null 2>&1 &\necho $! > '{}'\necho '{RESULT}'",
            pids.display()
        ),
    );
    let agent = ClaudeCodeAgent::new(f.config(&bin)).unwrap();
    let req = f.request("go", 60);
    let run_id = req.run_id;
    let (result, events) = run(&agent, req).await;
    let result = result.unwrap();
    assert_eq!(result.status, AgentStatus::Success);
    assert_eq!(result.output, "all done");
    assert_eq!(result.cost_usd, Some(0.01));
    assert_eq!(
        (
            result.usage.input_tokens,
            result.usage.output_tokens,
            result.num_turns
        ),
        (5, 2, 1)
    );
    assert!(matches!(&events[0], AgentEvent::Started { session_id: Some(s), .. } if s == "sess-1"));
    for pid in wait_for_pids(&pids, 1).await {
        assert!(is_dead(pid), "background job {pid} outlived the run");
    }
    // A cancel after the end is a no-op: a run reusing the id still runs.
    agent.cancel(run_id).await.unwrap();
    let mut req = f.request("go", 60);
    req.run_id = run_id;
    let (result, _) = run(&agent, req).await;
    assert_eq!(result.unwrap().status, AgentStatus::Success);
}

#[tokio::test]
async fn prompt_goes_on_stdin_secrets_stay_out_of_argv_and_events() {
    let f = Fixture::new();
    let (args, stdin) = (f.path("args"), f.path("stdin"));
    let bin = f.script(
        "claude-echo",
        &format!(
            r#"printf '%s\n' "$@" > '{args}'
cat > '{stdin}'
echo '{INIT}'
printf '{{"type":"assistant","message":{{"content":[{{"type":"text","text":"key is %s, cwd %s"}}]}}}}\n' "$MY_TOKEN" "$PWD"
[ -z "$RDEV_MASTER_KEY" ] || echo '{{"type":"assistant","message":{{"content":[{{"type":"text","text":"LEAKED master key"}}]}}}}'
echo '{RESULT}'"#,
            args = args.display(),
            stdin = stdin.display()
        ),
    );
    let agent = ClaudeCodeAgent::new(f.config(&bin)).unwrap();
    let prompt = "write `rm -rf /` $(whoami) 'quoted'\nsecond line";
    let mut req = f.request(prompt, 60);
    req.model = Some("claude-test".into());
    req.max_turns = Some(7);
    req.session_id = Some("prev-session".into());
    req.env = BTreeMap::from([("MY_TOKEN".to_owned(), SecretString::new("tok-123456789"))]);
    // rdev's own secrets must not reach the CLI (it only inherits `inherit_env`).
    let _env = ProcessEnv::set("RDEV_MASTER_KEY", "master-should-not-pass").await;
    let (result, events) = run(&agent, req).await;
    assert_eq!(result.unwrap().status, AgentStatus::Success);
    assert_eq!(std::fs::read_to_string(&stdin).unwrap(), prompt);
    let argv = std::fs::read_to_string(&args).unwrap();
    let argv: Vec<&str> = argv.lines().collect();
    assert_eq!(
        argv,
        [
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--permission-mode",
            "bypassPermissions",
            "--model=claude-test",
            "--max-turns",
            "7",
            "--resume=prev-session"
        ]
    );
    let texts: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Message { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    let cwd = std::fs::canonicalize(f.dir.path()).unwrap();
    assert_eq!(texts, [format!("key is [redacted], cwd {}", cwd.display())]);
}

#[tokio::test]
async fn a_cli_that_dies_without_a_result_fails_with_its_stderr() {
    let f = Fixture::new();
    let bin = f.script(
        "claude-dies",
        &format!(
            "echo '{INIT}'\necho 'not json at all'\necho 'boom: the model exploded' >&2\nexit 3"
        ),
    );
    let agent = ClaudeCodeAgent::new(f.config(&bin)).unwrap();
    let (result, events) = run(&agent, f.request("go", 60)).await;
    let result = result.unwrap();
    assert_eq!(result.status, AgentStatus::Failed);
    assert!(
        result.output.contains("exit status: 3"),
        "{}",
        result.output
    );
    assert!(
        result.output.contains("boom: the model exploded"),
        "{}",
        result.output
    );
    assert!(
        events.iter().any(|e| matches!(e, AgentEvent::Error { message } if message.contains("malformed stream-json line 2"))),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_silent_cli_is_unavailable_and_is_killed() {
    let f = Fixture::new();
    let pids = f.path("pids");
    let bin = f.script(
        "claude-silent",
        &format!("echo $$ > '{}'\nexec sleep 1000", pids.display()),
    );
    let mut cfg = f.config(&bin);
    cfg.availability_timeout = Duration::from_secs(1);
    let agent = ClaudeCodeAgent::new(cfg).unwrap();
    let (result, _) = run(&agent, f.request("go", 60)).await;
    assert!(
        matches!(result, Err(AgentError::Unavailable { .. })),
        "{result:?}"
    );
    for pid in wait_for_pids(&pids, 1).await {
        assert!(is_dead(pid));
    }
}

/// The same stand-in mechanism inside the default sandbox: the CLI runs in its own PID
/// namespace with a throw-away HOME, sees its workdir, and a missing binary is still a
/// spawn error naming it.
#[tokio::test]
async fn sandboxed_stand_in_sees_only_its_task() {
    let f = Fixture::new();
    let out = f.path("seen");
    let bin = f.script(
        "claude-sandboxed",
        &format!(
            r#"{{ echo "pid=$$"; echo "home=$HOME"; ls /proc | grep -c '^[0-9]'; ls /root 2>&1; cat /proc/self/status | grep NoNewPrivs; }} > '{out}'
echo '{INIT}'
echo '{RESULT}'"#,
            out = out.display()
        ),
    );
    let mut cfg = f.config(&bin);
    cfg.sandbox = SandboxConfig::default();
    let agent = ClaudeCodeAgent::new(cfg.clone()).unwrap();
    let (result, _) = run(&agent, f.request("go", 60)).await;
    assert_eq!(result.unwrap().status, AgentStatus::Success);
    let seen = std::fs::read_to_string(&out).unwrap();
    assert!(seen.contains("home=/home/agent"), "{seen}");
    assert!(
        seen.contains("No such file"),
        "/root is not mounted: {seen}"
    );
    assert!(seen.contains("NoNewPrivs:\t1"), "{seen}");
    let procs: usize = seen.lines().nth(2).unwrap().trim().parse().unwrap();
    assert!(procs < 10, "a fresh PID namespace: {seen}");
    cfg.bin = Some(f.path("no-such-claude"));
    let agent = ClaudeCodeAgent::new(cfg).unwrap();
    let (result, _) = run(&agent, f.request("go", 60)).await;
    let err = result.unwrap_err();
    assert!(matches!(err, AgentError::Spawn(_)), "{err:?}");
}

#[tokio::test]
async fn a_missing_binary_is_a_spawn_error() {
    let f = Fixture::new();
    let agent = ClaudeCodeAgent::new(f.config(&f.path("no-such-claude"))).unwrap();
    let (result, _) = run(&agent, f.request("go", 60)).await;
    let err = result.unwrap_err();
    assert!(matches!(err, AgentError::Spawn(_)), "{err:?}");
    assert!(err.to_string().contains("no-such-claude"), "{err}");
}

#[tokio::test]
async fn a_20_mb_tool_result_line_crosses_the_pipe_intact() {
    let f = Fixture::new();
    let transcript = f.path("transcript.jsonl");
    let big = "y".repeat(20 * 1024 * 1024);
    let line = format!(
        r#"{{"type":"user","message":{{"content":[{{"type":"tool_result","tool_use_id":"t1","content":"{big}"}}]}}}}"#
    );
    std::fs::write(&transcript, format!("{INIT}\n{line}\n{RESULT}\n")).unwrap();
    let bin = f.script("claude-cat", &format!("cat '{}'", transcript.display()));
    let agent = ClaudeCodeAgent::new(f.config(&bin)).unwrap();
    let (result, events) = run(&agent, f.request("go", 120)).await;
    assert_eq!(result.unwrap().status, AgentStatus::Success);
    let outputs: Vec<usize> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::ToolResult { output, .. } => Some(output.len()),
            _ => None,
        })
        .collect();
    assert_eq!(outputs, [big.len()]);
}

fn kubectl_local() -> PathBuf {
    rdev_testkit::workspace_root().join("scripts/kubectl-local")
}

#[tokio::test]
async fn kubectl_transport_runs_through_the_stand_in_with_env_on_stdin() {
    let f = Fixture::new();
    let (args, stdin, log) = (f.path("args"), f.path("stdin"), f.path("kubectl.log"));
    let bin = f.script(
        "claude-remote",
        &format!(
            r#"printf '%s\n' "$@" > '{args}'
cat > '{stdin}'
echo '{INIT}'
printf '{{"type":"assistant","message":{{"content":[{{"type":"text","text":"%s in %s"}}]}}}}\n' "$REMOTE_FLAG" "$PWD"
echo '{RESULT}'"#,
            args = args.display(),
            stdin = stdin.display()
        ),
    );
    let mut cfg = f.config(&bin);
    cfg.transport = TransportConfig::Kubectl(KubectlConfig {
        kubectl_bin: kubectl_local(),
        pod: "agent-0".into(),
        namespace: Some("builds".into()),
        container: Some("claude".into()),
        gateway_url: None,
    });
    cfg.inherit_env.push("KUBECTL_LOCAL_LOG".into());
    let _env = ProcessEnv::set("KUBECTL_LOCAL_LOG", &log).await;
    let agent = ClaudeCodeAgent::new(cfg).unwrap();
    let mut req = f.request("the prompt\nline 2", 60);
    req.env = BTreeMap::from([("REMOTE_FLAG".to_owned(), SecretString::new("flag-ok"))]);
    let (result, events) = run(&agent, req).await;
    assert_eq!(result.unwrap().status, AgentStatus::Success);
    assert_eq!(
        std::fs::read_to_string(&stdin).unwrap(),
        "the prompt\nline 2"
    );
    assert!(std::fs::read_to_string(&args)
        .unwrap()
        .starts_with("-p\n--output-format\n"));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "pod=agent-0 namespace=builds container=claude\n"
    );
    let cwd = std::fs::canonicalize(f.dir.path()).unwrap();
    let texts: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Message { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect();
    // The env value is a request secret, so it is redacted on the way back.
    assert_eq!(texts, [format!("[redacted] in {}", cwd.display())]);
    assert!(
        matches!(&events[0], AgentEvent::Started { .. }),
        "the pid line is consumed: {:?}",
        events[0]
    );
}

#[derive(Debug)]
struct NoSessions;

impl rdev_core::SessionAttribution for NoSessions {
    fn attribute(&self, _: &str) {}
}

#[tokio::test]
async fn kubectl_transport_with_a_gateway_url_gives_the_pod_the_token_never_the_key() {
    let f = Fixture::new();
    let env_file = f.path("pod-env");
    let bin = f.script(
        "claude-remote",
        &format!(
            "env > '{}'\necho '{INIT}'\necho '{RESULT}'",
            env_file.display()
        ),
    );
    let mut cfg = f.config(&bin);
    cfg.env.insert(
        "ANTHROPIC_API_KEY".into(),
        SecretString::new("sk-ant-real-key-0123"),
    );
    cfg.env.insert(
        "ANTHROPIC_BASE_URL".into(),
        SecretString::new("https://api.anthropic.com"),
    );
    cfg.transport = TransportConfig::Kubectl(KubectlConfig {
        kubectl_bin: kubectl_local(),
        pod: "agent-0".into(),
        namespace: None,
        container: None,
        gateway_url: Some("http://rdev-gateway.rdev.svc:17700/".into()),
    });
    let agent = ClaudeCodeAgent::new(cfg).unwrap();
    let mut req = f.request("go", 60);
    req.model_grant = Some(rdev_core::ModelGrant {
        token: SecretString::new("rdev-attempt-token-42"),
        sessions: Arc::new(NoSessions),
    });
    let (result, _) = run(&agent, req).await;
    assert_eq!(result.unwrap().status, AgentStatus::Success);
    let env = std::fs::read_to_string(&env_file).unwrap();
    let var = |name: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .map(str::to_owned)
    };
    assert_eq!(
        var("ANTHROPIC_BASE_URL").as_deref(),
        Some("http://rdev-gateway.rdev.svc:17700")
    );
    assert_eq!(
        var("ANTHROPIC_API_KEY").as_deref(),
        Some("rdev-attempt-token-42")
    );
    assert_eq!(
        var("HTTPS_PROXY").as_deref(),
        Some("http://rdev:rdev-attempt-token-42@rdev-gateway.rdev.svc:17700")
    );
    assert!(!env.contains("sk-ant-real-key"), "the pod got the real key");

    // The gateway's listener speaks plain HTTP: another URL is refused up front.
    let mut cfg = f.config(&bin);
    cfg.transport = TransportConfig::Kubectl(KubectlConfig {
        kubectl_bin: kubectl_local(),
        pod: "agent-0".into(),
        namespace: None,
        container: None,
        gateway_url: Some("https://rdev-gateway:17700".into()),
    });
    let err = ClaudeCodeAgent::new(cfg).unwrap_err();
    assert!(err.to_string().contains("gateway_url"), "{err}");
}

#[tokio::test]
async fn kubectl_transport_cancel_kills_the_remote_family() {
    let f = Fixture::new();
    let mut cfg = f.config(&family_script(&f));
    cfg.transport = TransportConfig::Kubectl(KubectlConfig {
        kubectl_bin: kubectl_local(),
        pod: "agent-0".into(),
        namespace: None,
        container: None,
        gateway_url: None,
    });
    let agent = Arc::new(ClaudeCodeAgent::new(cfg).unwrap());
    let req = f.request("go", 600);
    let run_id = req.run_id;
    let task = tokio::spawn({
        let agent = Arc::clone(&agent);
        async move { run(&agent, req).await }
    });
    let pids = wait_for_pids(&f.path("pids"), 3).await;
    agent.cancel(run_id).await.unwrap();
    let (result, _) = task.await.unwrap();
    assert_eq!(result.unwrap().status, AgentStatus::Cancelled);
    for pid in pids {
        assert!(is_dead(pid), "pid {pid} survived the kubectl cancel");
    }
}
