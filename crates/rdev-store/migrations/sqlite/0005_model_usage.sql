-- The model gateway (docs/gateway.md): what each attempt of a task used, per model, and
-- a project's egress allow-list and default budget. The PostgreSQL twin in ../postgres/
-- describes the same tables and columns.

-- One row per (task, attempt, model); every metered call adds to its row. Removed with the
-- task (retention prunes tasks; the foreign key takes these along).
CREATE TABLE task_usage (
    task_id                        BLOB NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt                        INTEGER NOT NULL,
    model                          TEXT NOT NULL,
    provider                       TEXT NOT NULL,
    input_tokens                   INTEGER NOT NULL DEFAULT 0,
    output_tokens                  INTEGER NOT NULL DEFAULT 0,
    cache_read_input_tokens        INTEGER NOT NULL DEFAULT 0,
    cache_creation_input_tokens    INTEGER NOT NULL DEFAULT 0,
    cache_creation_1h_input_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd                       REAL NOT NULL DEFAULT 0,
    calls                          INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (task_id, attempt, model)
);

-- host:port entries the project's agents may reach through the egress proxy (JSON array).
ALTER TABLE projects ADD COLUMN network_allow TEXT NOT NULL DEFAULT '[]';
-- The project's default budget; a build may ask for less, the server cap applies too.
ALTER TABLE projects ADD COLUMN max_cost_usd REAL;
ALTER TABLE projects ADD COLUMN max_tokens INTEGER;
