//! The Claude Code adapter against the real `claude` CLI (installed by
//! `scripts/setup-tools`) and the project's scripted model server: a tool loop, resume
//! (in the same directory, and from a session directory in another one), model errors,
//! timeout, cancel mid-tool, and the kubectl transport via `scripts/kubectl-local`. A
//! missing CLI panics with "run scripts/setup-tools".

use std::{path::Path, sync::Arc, time::Duration};

use rdev_agents::claude_code::{ClaudeCodeAgent, ClaudeCodeConfig, KubectlConfig, TransportConfig};
use rdev_core::{AgentEvent, AgentRequest, AgentResult, AgentStatus, CodeAgent, SecretString};
use rdev_testkit::{claude_bin, claude_env, workspace_root, ScriptedModel, TEST_API_KEY};
use tempfile::TempDir;
use tokio::sync::mpsc;

struct Env {
    model: ScriptedModel,
    state: TempDir,
    work: TempDir,
}

impl Env {
    async fn start() -> Self {
        Self {
            model: ScriptedModel::start().await.expect("scripted model"),
            state: tempfile::tempdir().unwrap(),
            work: tempfile::tempdir().unwrap(),
        }
    }

    fn config(&self) -> ClaudeCodeConfig {
        let home = self.state.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let mut env = claude_env(&self.model.base_url(), TEST_API_KEY);
        // A clean HOME keeps the machine's login profile out of the Bash tool's shells.
        env.insert(
            "HOME".to_owned(),
            SecretString::new(home.to_string_lossy().into_owned()),
        );
        ClaudeCodeConfig {
            bin: Some(claude_bin()),
            config_root: Some(self.state.path().to_path_buf()),
            env,
            ..ClaudeCodeConfig::default()
        }
    }

    fn workdir(&self) -> &Path {
        self.work.path()
    }

    fn request(&self, prompt: &str, timeout_secs: u64) -> AgentRequest {
        AgentRequest::new(prompt, self.workdir(), Duration::from_secs(timeout_secs))
    }
}

async fn run(agent: &ClaudeCodeAgent, req: AgentRequest) -> (AgentResult, Vec<AgentEvent>) {
    let (tx, mut rx) = mpsc::channel(64);
    let collect = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Some(e) = rx.recv().await {
            all.push(e);
        }
        all
    });
    let result = agent.execute(req, tx).await.expect("execute");
    (result, collect.await.unwrap())
}

fn tool_names(events: &[AgentEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::ToolUse { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect()
}

/// Processes whose working directory is `dir` (the CLI and its tool shells run there).
fn processes_in(dir: &Path) -> Vec<(u32, String)> {
    let dir = std::fs::canonicalize(dir).unwrap();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cwd) = std::fs::read_link(entry.path().join("cwd")) else {
            continue;
        };
        let state = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = state
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
        if cwd == dir && !zombie {
            let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push((pid, String::from_utf8_lossy(&cmd).replace('\0', " ")));
        }
    }
    found
}

#[tokio::test]
async fn tool_loop_writes_a_file_and_runs_a_bash_command() {
    let env = Env::start().await;
    let agent = ClaudeCodeAgent::new(env.config()).unwrap();
    let prompt = "@@write hello.txt\nHello from the scripted model\n@@end\n\
                  @@bash echo built > built.txt && cat hello.txt\n@@reply all done";
    let (result, events) = run(&agent, env.request(prompt, 120)).await;
    assert_eq!(
        result.status,
        AgentStatus::Success,
        "{result:?}\n{events:#?}"
    );
    assert_eq!(result.output, "all done");
    let session = result.session_id.clone().expect("session id");
    assert!(result.num_turns >= 3, "{result:?}");
    assert!(
        result.usage.input_tokens > 0 && result.usage.output_tokens > 0,
        "{result:?}"
    );
    assert!(result.cost_usd.is_some());
    let dir = env.workdir();
    assert_eq!(
        std::fs::read_to_string(dir.join("hello.txt")).unwrap(),
        "Hello from the scripted model\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("built.txt")).unwrap(),
        "built\n"
    );
    assert!(
        matches!(&events[0], AgentEvent::Started { session_id: Some(s), tools, .. } if *s == session && tools.iter().any(|t| t == "Bash")),
        "{:?}",
        events[0]
    );
    assert_eq!(tool_names(&events), ["Write", "Bash"]);
    let bash_output = events.iter().find_map(|e| match e {
        AgentEvent::ToolResult {
            output,
            is_error: false,
            ..
        } if output.contains("Hello from") => Some(output),
        _ => None,
    });
    assert!(
        bash_output.is_some(),
        "the Bash tool result carries cat's output: {events:#?}"
    );
    assert!(matches!(events.last(), Some(AgentEvent::Completed(r)) if *r == result));
    assert!(
        processes_in(dir).is_empty(),
        "left behind: {:?}",
        processes_in(dir)
    );
}

#[tokio::test]
async fn resume_continues_the_same_session() {
    let env = Env::start().await;
    let agent = ClaudeCodeAgent::new(env.config()).unwrap();
    let (first, _) = run(&agent, env.request("@@reply first answer", 120)).await;
    assert_eq!(first.status, AgentStatus::Success, "{first:?}");
    let session = first.session_id.clone().expect("session id");
    let mut req = env.request("@@bash echo again > again.txt\n@@reply second answer", 120);
    req.session_id = Some(session.clone());
    let (second, events) = run(&agent, req).await;
    assert_eq!(second.status, AgentStatus::Success, "{second:?}");
    assert_eq!(second.output, "second answer");
    assert_eq!(second.session_id.as_deref(), Some(session.as_str()));
    assert!(matches!(&events[0], AgentEvent::Started { session_id: Some(s), .. } if *s == session));
    assert_eq!(
        std::fs::read_to_string(env.workdir().join("again.txt")).unwrap(),
        "again\n"
    );
}

/// The first agent request (not a title or other side request) served after `from`.
fn first_agent_request(model: &ScriptedModel, from: usize) -> rdev_testkit::RecordedRequest {
    model.requests()[from..]
        .iter()
        .find(|r| r.path == "/v1/messages" && !r.side)
        .cloned()
        .expect("the run asked the model")
}

#[tokio::test]
async fn a_session_kept_in_the_session_dir_resumes_in_another_workdir() {
    let env = Env::start().await;
    let agent = ClaudeCodeAgent::new(env.config()).unwrap();
    // Two checkouts of one project, one after the other, as rdev makes them.
    let (one, two) = (env.workdir().join("site-1"), env.workdir().join("site-2"));
    std::fs::create_dir_all(&one).unwrap();
    let store = env.state.path().join("sessions/site/claude-code");
    let mut req = AgentRequest::new(
        "First build\n@@write a.txt\nhello\n@@end\n@@reply first done",
        &one,
        Duration::from_secs(120),
    );
    req.session_dir = Some(store.clone());
    let (first, events) = run(&agent, req).await;
    assert_eq!(first.status, AgentStatus::Success, "{first:?}\n{events:#?}");
    let session = first.session_id.clone().expect("session id");
    assert!(store.join(format!("{session}.jsonl")).is_file());
    // The first checkout and its config dir (with the CLI's own copy) are gone.
    for dir in agent.workdir_state(&one).into_iter().chain([one.clone()]) {
        std::fs::remove_dir_all(dir).unwrap();
    }

    std::fs::create_dir_all(&two).unwrap();
    let before = env.model.requests().len();
    let mut req = AgentRequest::new(
        "Second build\n@@bash pwd > where.txt\n@@reply second done",
        &two,
        Duration::from_secs(120),
    );
    req.session_id = Some(session.clone());
    req.session_dir = Some(store.clone());
    let (second, events) = run(&agent, req).await;
    assert_eq!(
        second.status,
        AgentStatus::Success,
        "{second:?}\n{events:#?}"
    );
    assert_eq!(second.session_id.as_deref(), Some(session.as_str()));
    let sent = first_agent_request(&env.model, before);
    let texts: Vec<(&str, &str)> = sent
        .messages
        .iter()
        .flat_map(|m| m.texts.iter().map(move |t| (m.role.as_str(), t.as_str())))
        .collect();
    let position = |role: &str, needle: &str| {
        texts
            .iter()
            .position(|(r, t)| *r == role && t.contains(needle))
            .unwrap_or_else(|| panic!("no {role} message with {needle:?} in {texts:#?}"))
    };
    assert!(position("user", "First build") < position("assistant", "first done"));
    assert!(position("assistant", "first done") < position("user", "Second build"));
    let here = std::fs::canonicalize(&two).unwrap();
    assert_eq!(
        std::fs::read_to_string(two.join("where.txt"))
            .unwrap()
            .trim(),
        here.to_string_lossy()
    );
    // The transcript in this run's config dir names the new checkout, not the old one.
    let kept = std::fs::read_to_string(store.join(format!("{session}.jsonl"))).unwrap();
    assert!(kept.contains("Second build") && kept.contains("second done"));
    assert!(
        !kept.contains(&*one.to_string_lossy()),
        "old checkout path left in {kept}"
    );

    // A session this directory does not keep never starts the CLI.
    let before = env.model.requests().len();
    let mut req = AgentRequest::new("@@reply x", &two, Duration::from_secs(60));
    req.session_id = Some("0197a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into());
    req.session_dir = Some(store);
    let (tx, _rx) = mpsc::channel(8);
    let err = agent.execute(req, tx).await.unwrap_err();
    assert_eq!(
        rdev_core::ErrorCode::code(&err),
        "session_not_found",
        "{err}"
    );
    assert_eq!(env.model.requests().len(), before);
}

async fn assert_model_error_fails(status: u16, message: &str) {
    let env = Env::start().await;
    let agent = ClaudeCodeAgent::new(env.config()).unwrap();
    let prompt = format!("@@error {status} {message}");
    let (result, events) = run(&agent, env.request(&prompt, 120)).await;
    assert_eq!(
        result.status,
        AgentStatus::Failed,
        "{result:?}\n{events:#?}"
    );
    assert!(
        result.output.contains(&status.to_string()) || result.output.contains(message),
        "the reason names the error: {}",
        result.output
    );
}

#[tokio::test]
async fn model_http_500_is_a_failed_result_with_the_reason() {
    assert_model_error_fails(500, "scripted internal failure").await;
}

#[tokio::test]
async fn model_http_529_overloaded_is_a_failed_result_with_the_reason() {
    assert_model_error_fails(529, "scripted overload").await;
}

#[tokio::test]
async fn timeout_stops_the_cli_and_reports_timed_out() {
    let env = Env::start().await;
    let agent = ClaudeCodeAgent::new(env.config()).unwrap();
    let (result, _) = run(&agent, env.request("@@sleep 120000\n@@reply too late", 3)).await;
    assert_eq!(result.status, AgentStatus::TimedOut, "{result:?}");
    assert!(
        processes_in(env.workdir()).is_empty(),
        "left behind: {:?}",
        processes_in(env.workdir())
    );
}

#[tokio::test]
async fn cancel_during_a_bash_tool_kills_the_cli_and_its_tool_shell() {
    let env = Env::start().await;
    let agent = Arc::new(ClaudeCodeAgent::new(env.config()).unwrap());
    let req = env.request(
        "@@bash sleep 300 && echo finished > finished.txt\n@@reply done",
        600,
    );
    let run_id = req.run_id;
    let task = tokio::spawn({
        let agent = Arc::clone(&agent);
        async move { run(&agent, req).await }
    });
    // Wait until the Bash tool's shell runs in the workdir (a login shell can take a while
    // on a loaded machine before it reaches `sleep`).
    let mut seen = Vec::new();
    for _ in 0..3600 {
        seen = processes_in(env.workdir());
        if seen.iter().any(|(_, cmd)| cmd.contains("sleep 300")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        seen.iter().any(|(_, cmd)| cmd.contains("sleep 300")),
        "tool never started: {seen:?}"
    );
    agent.cancel(run_id).await.unwrap();
    let (result, events) = task.await.unwrap();
    assert_eq!(result.status, AgentStatus::Cancelled, "{result:?}");
    assert!(result.session_id.is_some());
    assert_eq!(tool_names(&events), ["Bash"]);
    assert!(
        processes_in(env.workdir()).is_empty(),
        "left behind: {:?}",
        processes_in(env.workdir())
    );
    assert!(!env.workdir().join("finished.txt").exists());
}

#[tokio::test]
async fn kubectl_transport_runs_the_real_cli_through_the_stand_in() {
    let env = Env::start().await;
    let mut cfg = env.config();
    cfg.transport = TransportConfig::Kubectl(KubectlConfig {
        kubectl_bin: workspace_root().join("scripts/kubectl-local"),
        pod: "agent-0".into(),
        namespace: Some("builds".into()),
        container: Some("claude".into()),
        gateway_url: None,
    });
    // The "pod" is this machine: give the CLI a private config dir there too.
    let remote_config = env.state.path().join("remote");
    cfg.env.insert(
        "CLAUDE_CONFIG_DIR".into(),
        SecretString::new(remote_config.to_string_lossy().into_owned()),
    );
    let agent = ClaudeCodeAgent::new(cfg).unwrap();
    let prompt = "@@write remote.txt\nwritten through kubectl\n@@end\n@@reply remote done";
    let (result, events) = run(&agent, env.request(prompt, 120)).await;
    assert_eq!(
        result.status,
        AgentStatus::Success,
        "{result:?}\n{events:#?}"
    );
    assert_eq!(result.output, "remote done");
    assert_eq!(
        std::fs::read_to_string(env.workdir().join("remote.txt")).unwrap(),
        "written through kubectl\n"
    );
    assert_eq!(tool_names(&events), ["Write"]);
    assert!(
        remote_config.is_dir(),
        "the CLI used the config dir sent over stdin"
    );
}
