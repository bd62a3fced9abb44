//! Validation errors shared by every edge (HTTP, CLI) and the [`ErrorCode`] trait that gives
//! each error a stable machine code. It must not know about HTTP status codes: the API layer
//! maps codes to statuses.

/// An error and its sources on one line (`a: b: c`): an HTTP client's own message is often
/// just "error sending request", the reason ("connection refused") is in a source.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A stable, machine-readable error code (`snake_case`), kept identical across releases.
pub trait ErrorCode {
    /// The code clients match on, e.g. `prompt_required`.
    fn code(&self) -> &'static str;
}

/// Input that breaks a domain rule. Every variant names what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The prompt is empty or only whitespace.
    #[error("prompt is required and must not be blank")]
    PromptRequired,
    /// The prompt is larger than the configured limit.
    #[error("prompt is {size} bytes; the limit is {limit} bytes")]
    PromptTooLarge { size: usize, limit: usize },
    /// The timeout is zero or above the configured maximum.
    #[error("timeout must be between 1 and {max_secs} seconds, got {got_secs}")]
    InvalidTimeout { got_secs: u64, max_secs: u64 },
    /// A project name that is not a slug.
    #[error("invalid project name {name:?}: {reason}")]
    InvalidProjectName { name: String, reason: &'static str },
    /// A provider id that is not a known form.
    #[error("invalid provider id {id:?}: {reason}")]
    InvalidProvider { id: String, reason: &'static str },
    /// A field failed a rule that has no variant of its own.
    #[error("invalid {field}: {reason}")]
    InvalidField { field: &'static str, reason: String },
    /// A model name that could become something other than a model name on an agent's
    /// command line (see [`crate::agent_args`]).
    #[error("invalid model {value:?}: {reason}")]
    InvalidModel { value: String, reason: &'static str },
    /// A session id that could become something other than a session id on an agent's
    /// command line or in its URL (see [`crate::agent_args`]).
    #[error("invalid session_id {value:?}: {reason}")]
    InvalidSessionId { value: String, reason: &'static str },
    /// An environment variable a project may not set (see [`crate::credentials::env_fence`]).
    #[error("environment variable {name} may not be set by a project: it matches {rule} ({why})")]
    ReservedEnvName {
        name: String,
        rule: &'static str,
        why: &'static str,
    },
    /// A secret name rdev keeps for itself: the callback signing secret.
    #[error(
        "secret {name} is the callback signing secret, which rdev keeps for itself: it cannot \
         be listed, set, deleted or injected through /secrets or a secret plan; \
         POST /projects/{{name}}/webhook-secret rotates it"
    )]
    ReservedSecretName { name: String },
}

impl ErrorCode for ValidationError {
    fn code(&self) -> &'static str {
        match self {
            Self::PromptRequired => "prompt_required",
            Self::PromptTooLarge { .. } => "prompt_too_large",
            Self::InvalidTimeout { .. } => "invalid_timeout",
            Self::InvalidProjectName { .. } => "invalid_project_name",
            Self::InvalidProvider { .. } => "invalid_provider",
            Self::InvalidField { .. } => "invalid_field",
            Self::InvalidModel { .. } => "invalid_model",
            Self::InvalidSessionId { .. } => "invalid_session_id",
            Self::ReservedEnvName { .. } => "reserved_env_name",
            Self::ReservedSecretName { .. } => "reserved_secret_name",
        }
    }
}
