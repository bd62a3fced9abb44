-- Indexes for pruning old history (crates/rdev-store/src/retention.rs). The SQLite twin in
-- ../sqlite/ creates the same indexes.

-- Finished tasks in the order they ended: the prune scan. The status list must match the
-- pruning query's, so the planner can use this partial index.
CREATE INDEX tasks_finished ON tasks (finished_at, id)
    WHERE status IN ('completed', 'failed', 'cancelled');

-- Audit rows by age.
CREATE INDEX secret_audit_at ON secret_audit (at);
