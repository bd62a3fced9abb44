-- Idempotency-Key checks the request, not only the key: the fingerprint of the spec a keyed
-- task was created from (BuildSpec::fingerprint, SHA-256 hex of its canonical JSON), so a
-- second request with the same key and a different body is refused instead of answered
-- with a task it did not ask for. NULL for tasks without a key and for tasks stored before
-- this column existed (those keep answering with the original task).
ALTER TABLE tasks ADD COLUMN request_hash TEXT;

-- The bare repository rdev created for a project (absolute path), removed when the project
-- is deleted. NULL when the project's repository was given as repo_url: rdev never removes
-- a repository it did not create, even one that lies under its git root.
ALTER TABLE projects ADD COLUMN created_repo TEXT;
