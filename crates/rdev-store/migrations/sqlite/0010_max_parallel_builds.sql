-- How many builds of a project run at once, across all nodes (docs/decisions.md 46): the
-- claim skips a queued task unless it is among the first max_parallel_builds - running
-- queued tasks of its project in submission order. A task whose project has no row counts
-- as 1, the default. The PostgreSQL twin in ../postgres/ describes the same column and index.
ALTER TABLE projects ADD COLUMN max_parallel_builds INTEGER NOT NULL DEFAULT 1
    CHECK (max_parallel_builds BETWEEN 1 AND 64);
-- The claim's two counts per candidate, each an index probe bounded by the limit: the
-- project's running tasks, and its queued tasks ahead of the candidate.
CREATE INDEX tasks_project_active ON tasks (project, status, created_at, id)
    WHERE status IN ('queued', 'running');
