-- Agent sessions a later build of the same project may resume (a build's `session_id`):
-- one row per (project, session), written in the transaction that completes a build whose
-- result names a session, and pointing at the latest such task. It goes with its project
-- (deleted) and with that task (retention prunes it). docs/decisions.md 40. The PostgreSQL
-- twin in ../postgres/ describes the same table.
CREATE TABLE project_sessions (
    project    TEXT NOT NULL REFERENCES projects (name) ON DELETE CASCADE,
    session_id TEXT NOT NULL,
    provider   TEXT NOT NULL,
    task_id    BLOB NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (project, session_id)
);
-- Pruning a task looks its sessions up by task.
CREATE INDEX project_sessions_task ON project_sessions (task_id);
