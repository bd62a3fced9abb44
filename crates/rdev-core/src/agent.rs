//! The code-agent port: what a request to an agent looks like ([`AgentRequest`]), the one
//! event stream every provider emits ([`AgentEvent`]), the final [`AgentResult`], and the
//! [`CodeAgent`] trait adapters implement. Nothing here spawns processes or opens sockets.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{AgentProvider, ErrorCode, SecretString, ValidationError};

/// How long an adapter waits for its agent to become available (a server answering its
/// health check, a CLI printing its first byte) before it fails with
/// [`AgentError::Unavailable`].
///
/// 30 s covers a cold `opencode serve` start (about 10 s measured offline, see
/// ENVIRONMENT.md) with room for a loaded machine, and is short enough that a dead agent
/// turns into a clear error well inside any build timeout. Adapters take it as their
/// default and let configuration override it.
pub const DEFAULT_AVAILABILITY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where an adapter sends the events of one run. Bounded: a slow consumer slows the agent's
/// reader down instead of losing events.
pub type EventSink = tokio::sync::mpsc::Sender<AgentEvent>;

/// Identifies one agent run so that it can be cancelled, even before it has started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RunId(pub Uuid);

impl RunId {
    /// A new, time-ordered run id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for RunId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Limits [`AgentRequest::validate`] enforces; they come from configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestLimits {
    /// The longest a single run may be allowed to take.
    pub max_timeout: Duration,
    /// The largest prompt accepted, in bytes of UTF-8.
    pub max_prompt_bytes: usize,
}

impl RequestLimits {
    /// Default maximum timeout: 4 hours, longer than any sensible unattended build.
    pub const DEFAULT_MAX_TIMEOUT: Duration = Duration::from_secs(4 * 60 * 60);
    /// Default maximum prompt size: 256 KiB, far above a hand-written brief and small
    /// enough that a pasted log or binary is refused before it reaches a model.
    pub const DEFAULT_MAX_PROMPT_BYTES: usize = 256 * 1024;

    /// No size or maximum-timeout limit: only what no agent can run (a blank prompt, a
    /// sub-second timeout) is refused. Adapters use it; the configured limits are the
    /// caller's to enforce.
    pub const UNBOUNDED: Self = Self {
        max_timeout: Duration::MAX,
        max_prompt_bytes: usize::MAX,
    };
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_timeout: Self::DEFAULT_MAX_TIMEOUT,
            max_prompt_bytes: Self::DEFAULT_MAX_PROMPT_BYTES,
        }
    }
}

/// One request to run a code agent in a working directory.
#[derive(Debug, Clone)]
pub struct AgentRequest {
    /// Identifies this run for [`CodeAgent::cancel`].
    pub run_id: RunId,
    /// What the agent is asked to do.
    pub prompt: String,
    /// The checkout the agent works in.
    pub workdir: PathBuf,
    /// Paths outside `workdir` the agent may read but never write, at the same absolute
    /// paths: the checkout's git directory and the object store it borrows from, so the
    /// agent's own `git status`/`git diff` work. A sandbox mounts them read-only; nothing
    /// else of rdev's data directory is visible to the agent.
    pub read_only_paths: Vec<PathBuf>,
    /// A model name understood by the provider; `None` uses the provider's default.
    pub model: Option<String>,
    /// Resume this earlier session instead of starting a new one.
    pub session_id: Option<String>,
    /// Where sessions outlive the run that made them (rdev: one directory per project and
    /// provider, outside every sandbox). With it, a run resuming `session_id` restores the
    /// session from here (or fails with [`AgentError::SessionNotFound`]) and every run
    /// saves its session here when it ends, so a later run in another working directory
    /// can resume it. The adapter touches only files named after session ids in it and
    /// never shows the directory to an agent. `None`: the provider's own session state.
    pub session_dir: Option<PathBuf>,
    /// The run is cancelled and reported [`AgentStatus::TimedOut`] after this long.
    pub timeout: Duration,
    /// Extra environment for the agent. Values are secrets and never formatted.
    pub env: BTreeMap<String, SecretString>,
    /// Stop when the reported cost passes this (providers that report cost).
    pub max_cost_usd: Option<f64>,
    /// Stop after this many agent turns (providers that support it).
    pub max_turns: Option<u32>,
    /// The run's access to the model through rdev's gateway: its token replaces every
    /// model credential the adapter would otherwise hand the agent. `None`: the adapter's
    /// own configuration (a direct run without a gateway).
    pub model_grant: Option<crate::ModelGrant>,
}

impl AgentRequest {
    /// A request with a fresh run id and no options set.
    pub fn new(prompt: impl Into<String>, workdir: impl Into<PathBuf>, timeout: Duration) -> Self {
        Self {
            run_id: RunId::new(),
            prompt: prompt.into(),
            workdir: workdir.into(),
            read_only_paths: Vec::new(),
            model: None,
            session_id: None,
            session_dir: None,
            timeout,
            env: BTreeMap::new(),
            max_cost_usd: None,
            max_turns: None,
            model_grant: None,
        }
    }

    /// Checks the request against `limits`: a non-blank prompt within the size limit, a
    /// timeout in `1s..=max_timeout`, a model name and session id that cannot become options
    /// ([`crate::agent_args`]), and no environment variable a project may not set
    /// ([`crate::credentials::env_fence`]). Adapters call it first, so a caller that skipped
    /// the API's checks still fails closed.
    pub fn validate(&self, limits: &RequestLimits) -> Result<(), ValidationError> {
        validate_prompt(&self.prompt, limits)?;
        validate_timeout(self.timeout, limits)?;
        if let Some(model) = &self.model {
            crate::agent_args::validate_model(model)?;
        }
        if let Some(session) = &self.session_id {
            crate::agent_args::validate_session_id(session)?;
        }
        self.env
            .keys()
            .try_for_each(|name| crate::credentials::env_fence::check_env_name(name))
    }
}

/// The prompt rule shared by [`AgentRequest`] and build specs.
pub fn validate_prompt(prompt: &str, limits: &RequestLimits) -> Result<(), ValidationError> {
    if prompt.trim().is_empty() {
        return Err(ValidationError::PromptRequired);
    }
    if prompt.len() > limits.max_prompt_bytes {
        return Err(ValidationError::PromptTooLarge {
            size: prompt.len(),
            limit: limits.max_prompt_bytes,
        });
    }
    Ok(())
}

/// The timeout rule shared by [`AgentRequest`] and build specs: at least one second
/// (sub-second timeouts are a unit mistake) and at most `limits.max_timeout`.
pub fn validate_timeout(timeout: Duration, limits: &RequestLimits) -> Result<(), ValidationError> {
    if timeout < Duration::from_secs(1) || timeout > limits.max_timeout {
        return Err(ValidationError::InvalidTimeout {
            got_secs: timeout.as_secs(),
            max_secs: limits.max_timeout.as_secs(),
        });
    }
    Ok(())
}

/// Token counts reported by a provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    #[serde(default)]
    pub cache_read_input_tokens: u64,
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    Success,
    Failed,
    Cancelled,
    TimedOut,
}

/// The outcome of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentResult {
    pub status: AgentStatus,
    /// The agent's final answer, or the reason it failed.
    pub output: String,
    /// The provider's session id; pass it back as `session_id` to resume.
    pub session_id: Option<String>,
    pub cost_usd: Option<f64>,
    pub usage: Usage,
    pub num_turns: u32,
    #[serde(with = "duration_ms")]
    pub duration: Duration,
}

/// One thing that happened during a run. Every provider maps its own stream to these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentEvent {
    /// The agent is up: its session, model and tools.
    Started {
        session_id: Option<String>,
        model: Option<String>,
        tools: Vec<String>,
    },
    /// Text from the assistant (or another role).
    Message { role: String, text: String },
    /// The agent calls a tool.
    ToolUse {
        id: String,
        name: String,
        input: serde_json::Value,
    },
    /// A tool's answer.
    ToolResult {
        id: String,
        output: String,
        is_error: bool,
    },
    /// Token usage so far (or for the last turn).
    Usage(Usage),
    /// Something went wrong that did not end the run by itself (a malformed line, a
    /// provider error message).
    Error { message: String },
    /// A provider event rdev has no mapping for, kept as it came.
    Raw { value: serde_json::Value },
    /// The run ended.
    Completed(AgentResult),
}

/// What a provider can do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Capabilities {
    pub resume: bool,
    pub cancel: bool,
    pub streaming: bool,
    /// Model names known to work; empty means "whatever the provider accepts".
    pub models: Vec<String>,
    pub cost_reporting: bool,
    /// Whether a project's `network_allow` reaches this agent's runs (their proxy is the
    /// gateway's egress proxy). When false, a run reaches nothing but the model (OpenCode's
    /// shared server) or what its pod allows (Claude Code over kubectl without a gateway).
    pub network_allow: bool,
}

/// Why an agent could not run or finish. A run that the agent itself reports as failed is
/// not an error: it is an [`AgentResult`] with [`AgentStatus::Failed`].
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The agent did not become available within the availability timeout.
    #[error("agent not available after {waited:?}: {reason}")]
    Unavailable { waited: Duration, reason: String },
    /// The agent process could not be started.
    #[error("could not start agent: {0}")]
    Spawn(String),
    /// An HTTP call to the agent failed.
    #[error("{method} {path} failed with status {status}: {body}")]
    Http {
        method: String,
        path: String,
        status: u16,
        body: String,
    },
    /// The agent said something rdev could not understand.
    #[error("agent protocol error: {0}")]
    Protocol(String),
    /// The event consumer went away.
    #[error("event sink closed")]
    SinkClosed,
    #[error("agent I/O error: {0}")]
    Io(String),
    /// The agent's sandbox cannot start here (bubblewrap missing, no user namespaces);
    /// the run fails closed instead of running unsandboxed.
    #[error("sandbox unavailable: {0}")]
    SandboxUnavailable(String),
    /// The session to resume is not where the request's `session_dir` keeps sessions (made
    /// on another node, or removed); the run does not start rather than start afresh.
    #[error("session {session_id} cannot be resumed: {reason}")]
    SessionNotFound { session_id: String, reason: String },
}

impl ErrorCode for AgentError {
    fn code(&self) -> &'static str {
        match self {
            Self::Invalid(e) => e.code(),
            Self::Unavailable { .. } => "agent_unavailable",
            Self::Spawn(_) => "agent_spawn_failed",
            Self::Http { .. } => "agent_http_error",
            Self::Protocol(_) => "agent_protocol_error",
            Self::SinkClosed => "event_sink_closed",
            Self::Io(_) => "agent_io_error",
            Self::SandboxUnavailable(_) => "sandbox_unavailable",
            Self::SessionNotFound { .. } => "session_not_found",
        }
    }
}

impl From<std::io::Error> for AgentError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e.to_string())
    }
}

/// A code agent: Claude Code, OpenCode, or anything else that edits a checkout on request.
#[async_trait::async_trait]
pub trait CodeAgent: Send + Sync + fmt::Debug {
    /// The provider id this adapter serves.
    fn provider(&self) -> AgentProvider;

    /// What this adapter supports.
    fn capabilities(&self) -> Capabilities;

    /// Runs the request to its end, sending events to `events` as they happen. Returns the
    /// final result (also sent as [`AgentEvent::Completed`]). A timeout yields
    /// [`AgentStatus::TimedOut`], a cancel [`AgentStatus::Cancelled`].
    async fn execute(
        &self,
        request: AgentRequest,
        events: EventSink,
    ) -> Result<AgentResult, AgentError>;

    /// Cancels the run `run`. Safe to call before the run starts (it then ends at once as
    /// cancelled), while it runs, and after it finished (a no-op).
    async fn cancel(&self, run: RunId) -> Result<(), AgentError>;

    /// Directories outside `workdir` where this agent keeps the state of its runs in
    /// `workdir` (Claude Code: the per-directory `CLAUDE_CONFIG_DIR` with the session
    /// transcripts), whether or not they exist yet. The adapter creates them and never
    /// removes them: their lifetime is the caller's, who knows whether the workspace
    /// outlives the run (rdev removes them with a task's checkout, or keeps them with a
    /// failed one). Default: none.
    fn workdir_state(&self, workdir: &Path) -> Vec<PathBuf> {
        let _ = workdir;
        Vec::new()
    }

    /// Existing state directories this agent keeps for working directories directly under
    /// `root` that no longer exist: left behind when a workspace was removed without its
    /// state (a crash, an older rdev). Only what can be attributed to `root` with
    /// certainty. Default: none.
    fn orphaned_state(&self, root: &Path) -> Vec<PathBuf> {
        let _ = root;
        Vec::new()
    }
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn req(prompt: &str, secs: u64) -> AgentRequest {
        AgentRequest::new(prompt, "/tmp", Duration::from_secs(secs))
    }

    #[test]
    fn blank_prompt_is_prompt_required() {
        let limits = RequestLimits::default();
        for p in ["", " ", "\n\t  \r\n"] {
            assert_eq!(
                req(p, 60).validate(&limits),
                Err(ValidationError::PromptRequired)
            );
        }
    }

    #[test]
    fn zero_and_too_long_timeouts_are_invalid() {
        let limits = RequestLimits::default();
        let max = limits.max_timeout.as_secs();
        assert!(matches!(
            req("hi", 0).validate(&limits),
            Err(ValidationError::InvalidTimeout { got_secs: 0, .. })
        ));
        assert!(req("hi", max).validate(&limits).is_ok());
        assert!(matches!(
            req("hi", max + 1).validate(&limits),
            Err(ValidationError::InvalidTimeout { .. })
        ));
        let sub_second = AgentRequest::new("hi", "/tmp", Duration::from_millis(500));
        assert!(sub_second.validate(&limits).is_err());
    }

    #[test]
    fn oversized_prompt_is_rejected_with_sizes() {
        let limits = RequestLimits {
            max_prompt_bytes: 10,
            ..RequestLimits::default()
        };
        assert!(req("0123456789", 5).validate(&limits).is_ok());
        assert_eq!(
            req("0123456789a", 5).validate(&limits),
            Err(ValidationError::PromptTooLarge {
                size: 11,
                limit: 10
            })
        );
    }

    #[test]
    fn option_like_model_session_and_fenced_env_fail_closed_in_the_adapter_check() {
        use crate::ErrorCode;
        let limits = RequestLimits::UNBOUNDED;
        for bad in ["--add-dir=/", "-p", "--permission-mode=default"] {
            let mut r = req("hi", 5);
            r.model = Some(bad.into());
            assert_eq!(r.validate(&limits).unwrap_err().code(), "invalid_model");
            let mut r = req("hi", 5);
            r.session_id = Some(bad.into());
            assert_eq!(
                r.validate(&limits).unwrap_err().code(),
                "invalid_session_id"
            );
        }
        let mut r = req("hi", 5);
        r.env
            .insert("ANTHROPIC_BASE_URL".into(), SecretString::new("http://x"));
        assert_eq!(r.validate(&limits).unwrap_err().code(), "reserved_env_name");
        let mut r = req("hi", 5);
        r.model = Some("claude-sonnet-4-5".into());
        r.session_id = Some("0197a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into());
        r.env.insert("DEPLOY_TOKEN".into(), SecretString::new("t"));
        assert_eq!(r.validate(&limits), Ok(()));
    }

    #[test]
    fn request_debug_hides_env_values() {
        let mut r = req("hi", 5);
        r.env
            .insert("TOKEN".into(), SecretString::new("s3cr3t-value"));
        let dbg = format!("{r:?}");
        assert!(dbg.contains("TOKEN"));
        assert!(!dbg.contains("s3cr3t-value"));
    }

    #[test]
    fn events_serialize_with_a_type_tag() {
        let e = AgentEvent::ToolUse {
            id: "t1".into(),
            name: "Write".into(),
            input: serde_json::json!({"file_path": "a"}),
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "tool_use");
        let back: AgentEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }

    proptest! {
        #[test]
        fn validation_accepts_exactly_nonblank_small_prompts_with_sane_timeouts(
            prompt in "\\PC{0,64}",
            secs in 0u64..20_000,
            max_prompt in 1usize..80,
        ) {
            let limits = RequestLimits { max_timeout: Duration::from_secs(14_400), max_prompt_bytes: max_prompt };
            let got = req(&prompt, secs).validate(&limits);
            let expect_ok = !prompt.trim().is_empty() && prompt.len() <= max_prompt && (1..=14_400).contains(&secs);
            prop_assert_eq!(got.is_ok(), expect_ok, "prompt={:?} secs={} -> {:?}", prompt, secs, got);
            if prompt.trim().is_empty() {
                prop_assert_eq!(got, Err(ValidationError::PromptRequired));
            }
        }

        #[test]
        fn result_round_trips_through_json(ms in 0u64..10_000_000, turns in 0u32..1000, cost in proptest::option::of(0.0f64..100.0)) {
            let r = AgentResult {
                status: AgentStatus::Success,
                output: "done".into(),
                session_id: Some("s".into()),
                cost_usd: cost,
                usage: Usage::default(),
                num_turns: turns,
                duration: Duration::from_millis(ms),
            };
            let back: AgentResult = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
            prop_assert_eq!(back, r);
        }
    }
}
