//! Woodpecker's JSON shapes as rdev reads them: `Pipeline`, `Workflow`, `Step`, `Repo` and
//! the status values, checked against woodpecker-ci/woodpecker v3.17.0
//! (`server/model/pipeline.go`, `workflow.go`, `step.go`, `repo.go`, `const.go`). Only the
//! fields rdev uses are declared; unknown fields are ignored so newer servers keep working.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A pipeline or step status (`StatusValue` in Woodpecker).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(from = "String", into = "String")]
pub enum PipelineStatus {
    /// Created, not yet queued (internal to Woodpecker).
    Created,
    /// Waiting for an agent.
    #[default]
    Pending,
    /// Running now.
    Running,
    /// Finished successfully.
    Success,
    /// A step exited non-zero.
    Failure,
    /// Killed by a user.
    Killed,
    /// Cancelled before it started.
    Canceled,
    /// A configuration or system error.
    Error,
    /// Waiting for approval.
    Blocked,
    /// Approval was declined.
    Declined,
    /// Skipped by a condition.
    Skipped,
    /// A value this client does not know (a newer server); treated as not terminal.
    Unknown(String),
}

impl PipelineStatus {
    /// Whether the pipeline can no longer change.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Success
                | Self::Failure
                | Self::Killed
                | Self::Canceled
                | Self::Error
                | Self::Declined
                | Self::Skipped
        )
    }

    /// The status as Woodpecker spells it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Created => "created",
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Killed => "killed",
            Self::Canceled => "canceled",
            Self::Error => "error",
            Self::Blocked => "blocked",
            Self::Declined => "declined",
            Self::Skipped => "skipped",
            Self::Unknown(s) => s,
        }
    }
}

impl From<String> for PipelineStatus {
    fn from(s: String) -> Self {
        match s.as_str() {
            "created" => Self::Created,
            "pending" => Self::Pending,
            "running" => Self::Running,
            "success" => Self::Success,
            "failure" => Self::Failure,
            "killed" => Self::Killed,
            "canceled" => Self::Canceled,
            "error" => Self::Error,
            "blocked" => Self::Blocked,
            "declined" => Self::Declined,
            "skipped" => Self::Skipped,
            _ => Self::Unknown(s),
        }
    }
}

impl From<PipelineStatus> for String {
    fn from(s: PipelineStatus) -> Self {
        s.as_str().to_owned()
    }
}

impl fmt::Display for PipelineStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pipeline (`GET /api/repos/{repo_id}/pipelines[/{number}]`). The list endpoint leaves
/// `workflows` out; the single-pipeline endpoint fills it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pipeline {
    /// Server-wide id.
    pub id: i64,
    /// Per-repository number used in URLs.
    pub number: i64,
    /// Current status.
    #[serde(default)]
    pub status: PipelineStatus,
    /// The webhook event: `push`, `manual`, `deployment`, ...
    #[serde(default)]
    pub event: String,
    /// The full commit SHA.
    #[serde(default)]
    pub commit: String,
    /// The branch.
    #[serde(default)]
    pub branch: String,
    /// The git ref, e.g. `refs/heads/main`.
    #[serde(default, rename = "ref")]
    pub git_ref: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: i64,
    /// Unix seconds, 0 before start.
    #[serde(default)]
    pub started: i64,
    /// Unix seconds, 0 before the end.
    #[serde(default)]
    pub finished: i64,
    /// The deployment target of a `deployment` event (free text; may be a URL).
    #[serde(default)]
    pub deploy_to: String,
    /// Link to the commit at the forge.
    #[serde(default)]
    pub forge_url: String,
    /// Workflows with their steps (`children`).
    #[serde(default)]
    pub workflows: Vec<Workflow>,
}

/// A repository as Woodpecker's repo lookup (`GET /api/repos/lookup/{full_name}`) answers it
/// (`model.Repo`; `server/model/repo.go`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repo {
    /// The id the repository routes use (`/api/repos/{repo_id}/...`).
    pub id: i64,
    /// `owner/name`, as the forge spells it (the lookup ignores case).
    #[serde(default)]
    pub full_name: String,
    /// Whether Woodpecker builds it (an inactive repository gets no pipelines).
    #[serde(default)]
    pub active: bool,
}

/// A workflow: one `.woodpecker/*.yaml` file's run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workflow {
    /// Server-wide id.
    pub id: i64,
    /// Position in the pipeline.
    #[serde(default)]
    pub pid: i64,
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// Its status.
    #[serde(default)]
    pub state: PipelineStatus,
    /// Why it errored, if it did.
    #[serde(default)]
    pub error: Option<String>,
    /// Its steps.
    #[serde(default)]
    pub children: Vec<Step>,
}

/// A step of a workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Server-wide id (used for logs).
    pub id: i64,
    /// Position in the pipeline.
    #[serde(default)]
    pub pid: i64,
    /// The workflow's `pid`.
    #[serde(default)]
    pub ppid: i64,
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// Its status.
    #[serde(default)]
    pub state: PipelineStatus,
    /// Exit code once finished.
    #[serde(default)]
    pub exit_code: i64,
    /// Why it errored, if it did.
    #[serde(default)]
    pub error: Option<String>,
}

/// One step's final state, flattened for reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepState {
    /// The workflow's name.
    pub workflow: String,
    /// The step's name.
    pub name: String,
    /// Its status.
    pub state: PipelineStatus,
    /// Its exit code.
    pub exit_code: i64,
    /// Why it errored, if it did.
    pub error: Option<String>,
}

/// A pipeline followed to its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineOutcome {
    /// The pipeline as last fetched (with workflows).
    pub pipeline: Pipeline,
    /// Every step's final state, in workflow then step order.
    pub steps: Vec<StepState>,
}

impl PipelineOutcome {
    /// Builds the outcome from a fetched pipeline.
    pub fn from_pipeline(pipeline: Pipeline) -> Self {
        let steps = pipeline
            .workflows
            .iter()
            .flat_map(|w| {
                w.children.iter().map(|s| StepState {
                    workflow: w.name.clone(),
                    name: s.name.clone(),
                    state: s.state.clone(),
                    exit_code: s.exit_code,
                    error: s.error.clone(),
                })
            })
            .collect();
        Self { pipeline, steps }
    }

    /// The final status.
    pub fn status(&self) -> &PipelineStatus {
        &self.pipeline.status
    }

    /// Whether the pipeline succeeded.
    pub fn succeeded(&self) -> bool {
        self.pipeline.status == PipelineStatus::Success
    }
}
