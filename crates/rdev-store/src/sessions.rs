//! The [`SessionStore`] port on [`SqlStore`]: the agent sessions completed builds reported,
//! per project (`project_sessions`). A row is written by [`record_session!`] inside the
//! transaction that completes the task, so a session is known exactly when its build is;
//! it goes with its project (foreign key, on deletion) and with its task (retention). This
//! module stores ids only: transcripts are the agents' and the server's business.

use async_trait::async_trait;
use rdev_core::{
    agent_args::validate_session_id, BuildResult, ProjectName, ProjectSession, SessionStore,
    StoreError, TaskId,
};
use uuid::Uuid;

use crate::{
    sql::{corrupt, db_err, on_pool, Ts},
    sql_store::SqlStore,
};

/// Inserts a session (`$1` project, `$2` session, `$3` provider, `$4` task, `$5` now), or
/// points an existing one at this later task. A project removed meanwhile gets no row.
pub(crate) const RECORD: &str = "INSERT INTO project_sessions \
     (project, session_id, provider, task_id, created_at) \
     SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM projects WHERE name = $1) \
     ON CONFLICT (project, session_id) DO UPDATE SET \
     provider = excluded.provider, task_id = excluded.task_id";

const FIND: &str = "SELECT project, session_id, provider, task_id, created_at \
     FROM project_sessions WHERE project = $1 AND session_id = $2";

/// The provider and session a result reports, when the session id is one a build request
/// could name (anything else could never be resumed, so it is not recorded).
pub(crate) fn session_of(result: &BuildResult) -> Option<(&str, &str)> {
    let run = result.agent.run.as_ref()?;
    let session = run.session_id.as_deref()?;
    validate_session_id(session).ok()?;
    Some((run.provider.as_str(), session))
}

/// Records the session the completed task `$task`'s `$result` names, inside the open
/// transaction `$tx` that completes it.
macro_rules! record_session {
    ($tx:ident, $task:expr, $result:expr, $now:expr) => {{
        let task: &rdev_core::WorkTask = $task;
        if let Some((provider, session)) = $crate::sessions::session_of($result) {
            sqlx::query($crate::sessions::RECORD)
                .bind(task.project.as_str())
                .bind(session)
                .bind(provider)
                .bind(task.id.0)
                .bind($crate::sql::Ts::from($now))
                .execute(&mut *$tx)
                .await
                .map_err($crate::sql::db_err)?;
        }
    }};
}
pub(crate) use record_session;

/// A `project_sessions` row.
#[derive(Debug, sqlx::FromRow)]
struct SessionRow {
    project: String,
    session_id: String,
    provider: String,
    task_id: Uuid,
    created_at: Ts,
}

impl SessionRow {
    fn into_session(self) -> Result<ProjectSession, StoreError> {
        Ok(ProjectSession {
            project: ProjectName::parse(&self.project).map_err(corrupt)?,
            session_id: self.session_id,
            provider: self.provider,
            task_id: TaskId(self.task_id),
            created_at: self.created_at.0,
        })
    }
}

#[async_trait]
impl SessionStore for SqlStore {
    async fn project_session(
        &self,
        project: &ProjectName,
        session_id: &str,
    ) -> Result<Option<ProjectSession>, StoreError> {
        let row: Option<SessionRow> = on_pool!(&self.inner.db, pool => {
            sqlx::query_as(FIND)
                .bind(project.as_str())
                .bind(session_id)
                .fetch_optional(pool)
                .await
                .map_err(db_err)?
        });
        row.map(SessionRow::into_session).transpose()
    }
}
