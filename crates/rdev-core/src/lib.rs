//! rdev's domain: the types every other crate speaks (requests, events, tasks, projects),
//! their validation, the ports adapters implement, and the provider registry.
//!
//! This crate owns rules, not I/O: it must never depend on sqlx, reqwest, axum, hyper or
//! tokio's process/net features. Adapters live in `rdev-agents`, `rdev-store` and
//! `rdev-server` and depend on this crate, never the other way round.

pub mod agent;
pub mod agent_args;
pub mod api_schema;
pub mod build;
pub mod build_result;
pub mod callback_schema;
pub mod ci_repo;
pub mod credentials;
pub mod error;
pub mod grant;
pub mod json_int;
pub mod metering;
pub mod project_model;
pub mod provider;
pub mod push_protection;
pub mod queue;
pub mod registry;
pub mod retention;
pub mod secret_string;
pub mod session;
pub mod signal;
pub mod store;
pub mod task;
pub mod tokens;

pub use agent::{
    AgentError, AgentEvent, AgentRequest, AgentResult, AgentStatus, Capabilities, CodeAgent,
    EventSink, RequestLimits, RunId, Usage, DEFAULT_AVAILABILITY_TIMEOUT,
};
pub use build::BuildSpec;
pub use build_result::{
    callback_payload, AgentRun, AgentSummary, Artifacts, BuildResult, CallbackPayload,
    PipelineReport, PipelineSummary, PushProtectionReport,
};
pub use ci_repo::{validate_ci_repo, CiRepo, WoodpeckerRepo};
pub use credentials::{
    AuditAction, AuditEntry, AuditFilter, InjectionPlan, KeyCheck, Redactor, RotatedSecret,
    Rotation, SealedSecret, SecretMeta, SecretName, SecretRepository, SecretScope, REDACTED,
};
pub use error::{ErrorCode, ValidationError};
pub use grant::{ModelGrant, SessionAttribution};
pub use metering::{
    AttemptUsage, Budget, MeteredUsage, ModelPrice, PriceTable, TaskUsage, UsageStore, UsageTotal,
    DEFAULT_PRICES_DATE,
};
pub use project_model::{BranchName, Project, ProjectName, RepoUrl};
pub use provider::AgentProvider;
pub use push_protection::{AllowPattern, PushProtection};
pub use queue::{
    Clock, CompleteReport, FailOutcome, HeartbeatOutcome, Lease, LeaseKey, LeaseToken, ManualClock,
    ReapReport, RetryPolicy, SystemClock, Wake, WorkQueue, WorkSignal,
};
pub use registry::{ProviderRegistry, RegistryError};
pub use retention::{PruneReport, RetentionStore};
pub use secret_string::SecretString;
pub use session::{check_resumable, ProjectSession, SessionError, SessionStore};
pub use store::{
    AttemptRecord, Enqueued, NewTask, OutboxRow, OutboxStore, ProjectDeletion, ProjectStore, Store,
    StoreError, TaskEvent, TaskFilter, TaskStore,
};
pub use task::{TaskId, TaskStatus, TransitionError, WorkTask};
pub use tokens::{
    Action, ApiToken, Forbidden, Grant, Resource, TokenHash, TokenName, TokenScope, TokenStore,
};
