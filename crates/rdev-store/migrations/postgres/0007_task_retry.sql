-- POST /tasks/{id}/retry: a new task with the spec of a failed or cancelled one, linked to
-- it. One retry per task (asking again returns it), hence the partial unique index. The
-- SQLite twin in ../sqlite/ must describe the same column.
ALTER TABLE tasks ADD COLUMN retry_of UUID;
CREATE UNIQUE INDEX tasks_retry_of ON tasks (retry_of) WHERE retry_of IS NOT NULL;
