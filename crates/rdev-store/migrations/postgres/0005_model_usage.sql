-- The model gateway (docs/gateway.md): what each attempt of a task used, per model, and
-- a project's egress allow-list and default budget. The SQLite twin in ../sqlite/ describes
-- the same tables and columns.

-- One row per (task, attempt, model); every metered call adds to its row. Removed with the
-- task (retention prunes tasks; the foreign key takes these along).
CREATE TABLE task_usage (
    task_id                        UUID NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt                        INTEGER NOT NULL,
    model                          TEXT NOT NULL,
    provider                       TEXT NOT NULL,
    input_tokens                   BIGINT NOT NULL DEFAULT 0,
    output_tokens                  BIGINT NOT NULL DEFAULT 0,
    cache_read_input_tokens        BIGINT NOT NULL DEFAULT 0,
    cache_creation_input_tokens    BIGINT NOT NULL DEFAULT 0,
    cache_creation_1h_input_tokens BIGINT NOT NULL DEFAULT 0,
    cost_usd                       DOUBLE PRECISION NOT NULL DEFAULT 0,
    calls                          BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (task_id, attempt, model)
);

-- host:port entries the project's agents may reach through the egress proxy (JSON array).
ALTER TABLE projects ADD COLUMN network_allow JSONB NOT NULL DEFAULT '[]';
-- The project's default budget; a build may ask for less, the server cap applies too.
ALTER TABLE projects ADD COLUMN max_cost_usd DOUBLE PRECISION;
ALTER TABLE projects ADD COLUMN max_tokens BIGINT;
