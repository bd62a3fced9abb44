//! Tasks: one build request's life. [`TaskStatus`] and its allowed transitions are the
//! single source of truth for the state machine; stores and workers call
//! [`TaskStatus::transition`] rather than setting a status directly.

use std::{fmt, str::FromStr};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{BuildSpec, ErrorCode, ProjectName, ValidationError};

/// A task id: a UUIDv7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(pub Uuid);

impl TaskId {
    /// A new time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for TaskId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for TaskId {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| ValidationError::InvalidField {
                field: "task_id",
                reason: format!("{:?} is not a UUID", s.chars().take(60).collect::<String>()),
            })
    }
}

/// Where a task is in its life.
///
/// ```text
/// queued ──> running ──> completed | failed | cancelled
///   │  ^        │
///   │  └────────┘  (retry after lease loss or a retryable failure)
///   └──> cancelled
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

/// A status change the state machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("task cannot go from {from} to {to}")]
pub struct TransitionError {
    pub from: TaskStatus,
    pub to: TaskStatus,
}

impl ErrorCode for TransitionError {
    fn code(&self) -> &'static str {
        "invalid_transition"
    }
}

impl TaskStatus {
    /// All statuses, for exhaustive tests and docs.
    pub const ALL: [TaskStatus; 5] = [
        Self::Queued,
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];

    /// The lowercase name used in JSON, SQL and URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// No transition leaves a terminal status.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// Whether `self -> to` is allowed.
    pub fn can_transition_to(self, to: TaskStatus) -> bool {
        use TaskStatus::*;
        matches!(
            (self, to),
            (Queued, Running)
                | (Queued, Cancelled)
                | (Running, Completed)
                | (Running, Failed)
                | (Running, Cancelled)
                | (Running, Queued)
        )
    }

    /// `to` if the transition is allowed, else an error naming both ends.
    pub fn transition(self, to: TaskStatus) -> Result<TaskStatus, TransitionError> {
        if self.can_transition_to(to) {
            Ok(to)
        } else {
            Err(TransitionError { from: self, to })
        }
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskStatus {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| ValidationError::InvalidField {
                field: "status",
                reason: format!(
                    "{:?} is not one of queued, running, completed, failed, cancelled",
                    s.chars().take(40).collect::<String>()
                ),
            })
    }
}

/// One build request and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkTask {
    pub id: TaskId,
    pub project: ProjectName,
    pub spec: BuildSpec,
    pub status: TaskStatus,
    /// How many times a worker has started it (0 while first queued).
    pub attempt: u32,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub result: Option<crate::BuildResult>,
    pub error: Option<String>,
    /// The failed or cancelled task this one retries (`POST /tasks/{id}/retry`).
    pub retry_of: Option<TaskId>,
}

impl WorkTask {
    /// A new queued task.
    pub fn new(project: ProjectName, spec: BuildSpec, now: DateTime<Utc>) -> Self {
        Self {
            id: TaskId::new(),
            project,
            spec,
            status: TaskStatus::Queued,
            attempt: 0,
            created_at: now,
            started_at: None,
            finished_at: None,
            result: None,
            error: None,
            retry_of: None,
        }
    }

    /// Moves the task to `to`, keeping attempt and timestamps consistent with it.
    pub fn transition_to(
        &mut self,
        to: TaskStatus,
        now: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        self.status = self.status.transition(to)?;
        match to {
            TaskStatus::Running => {
                self.attempt += 1;
                self.started_at.get_or_insert(now);
            }
            TaskStatus::Queued => {}
            _ => self.finished_at = Some(now),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use TaskStatus::*;

    #[test]
    fn the_documented_paths_are_allowed() {
        for (a, b) in [
            (Queued, Running),
            (Running, Completed),
            (Running, Failed),
            (Running, Cancelled),
            (Running, Queued),
            (Queued, Cancelled),
        ] {
            assert_eq!(a.transition(b), Ok(b), "{a} -> {b}");
        }
    }

    #[test]
    fn terminal_states_are_final() {
        for from in [Completed, Failed, Cancelled] {
            assert!(from.is_terminal());
            for to in TaskStatus::ALL {
                let err = from.transition(to).unwrap_err();
                assert_eq!(err, TransitionError { from, to });
                assert_eq!(err.code(), "invalid_transition");
            }
        }
    }

    #[test]
    fn queued_cannot_skip_running() {
        assert!(Queued.transition(Completed).is_err());
        assert!(Queued.transition(Failed).is_err());
        assert!(Queued.transition(Queued).is_err());
    }

    #[test]
    fn status_round_trips_as_text() {
        for s in TaskStatus::ALL {
            assert_eq!(s.as_str().parse::<TaskStatus>().unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert!("done".parse::<TaskStatus>().is_err());
    }

    #[test]
    fn work_task_tracks_attempts_and_times() {
        let now = Utc::now();
        let mut t = WorkTask::new(
            ProjectName::parse("site").unwrap(),
            BuildSpec::new("x"),
            now,
        );
        t.transition_to(Running, now).unwrap();
        t.transition_to(Queued, now).unwrap();
        t.transition_to(Running, now).unwrap();
        assert_eq!(t.attempt, 2);
        t.transition_to(Completed, now).unwrap();
        assert_eq!(t.finished_at, Some(now));
        assert!(t.transition_to(Running, now).is_err());
        assert_eq!(t.status, Completed, "a refused transition changes nothing");
    }

    fn status() -> impl Strategy<Value = TaskStatus> {
        prop::sample::select(TaskStatus::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn any_walk_only_moves_along_allowed_edges(steps in prop::collection::vec(status(), 0..40)) {
            let now = Utc::now();
            let mut t = WorkTask::new(ProjectName::parse("p").unwrap(), BuildSpec::new("x"), now);
            let mut runs = 0;
            for to in steps {
                let before = t.status;
                match t.transition_to(to, now) {
                    Ok(()) => {
                        prop_assert!(before.can_transition_to(to));
                        prop_assert!(!before.is_terminal());
                        if to == Running { runs += 1; }
                    }
                    Err(e) => {
                        prop_assert_eq!(e, TransitionError { from: before, to });
                        prop_assert_eq!(t.status, before);
                    }
                }
            }
            prop_assert_eq!(t.attempt, runs);
            prop_assert_eq!(t.finished_at.is_some(), t.status.is_terminal());
        }
    }
}
