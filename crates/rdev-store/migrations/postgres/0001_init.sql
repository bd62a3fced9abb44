-- rdev schema, PostgreSQL flavour. The SQLite twin in ../sqlite/ must describe the same
-- tables and columns; timestamps here are timestamptz, there integer milliseconds (UTC).

CREATE TABLE projects (
    name               TEXT PRIMARY KEY,
    repo_url           TEXT NOT NULL,
    default_branch     TEXT NOT NULL,
    template           TEXT,
    woodpecker_repo_id BIGINT,
    deploy_url_pattern TEXT,
    provider           TEXT,
    secrets            JSONB NOT NULL DEFAULT '{}',
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL
);

-- A task and its queue row are one row: inserting the task is enqueuing it, and finishing
-- the task is finishing the job, so neither can exist without the other.
CREATE TABLE tasks (
    id               UUID PRIMARY KEY,
    project          TEXT NOT NULL,
    spec             JSONB NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('queued','running','completed','failed','cancelled')),
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL CHECK (max_attempts >= 1),
    priority         SMALLINT NOT NULL DEFAULT 0,
    run_at           TIMESTAMPTZ NOT NULL,
    unique_key       TEXT,
    lease_token      UUID,
    lease_owner      TEXT,
    lease_expires_at TIMESTAMPTZ,
    event_seq        BIGINT NOT NULL DEFAULT 0,
    created_at       TIMESTAMPTZ NOT NULL,
    started_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ,
    updated_at       TIMESTAMPTZ NOT NULL,
    result           JSONB,
    error            TEXT
);

-- The claim scan: only queued rows, in claim order.
CREATE INDEX tasks_claim ON tasks (priority, run_at, id) WHERE status = 'queued';
-- The reaper scan: only running rows.
CREATE INDEX tasks_lease_expiry ON tasks (lease_expires_at) WHERE status = 'running';
CREATE INDEX tasks_lease_token ON tasks (lease_token) WHERE lease_token IS NOT NULL;
CREATE UNIQUE INDEX tasks_unique_key ON tasks (project, unique_key) WHERE unique_key IS NOT NULL;
CREATE INDEX tasks_project ON tasks (project, id);
CREATE INDEX tasks_status ON tasks (status, id);

CREATE TABLE task_attempts (
    task_id     UUID NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    worker      TEXT NOT NULL,
    lease_token UUID NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    outcome     TEXT NOT NULL,
    error       TEXT,
    PRIMARY KEY (task_id, attempt)
);

CREATE TABLE task_events (
    task_id UUID NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    seq     BIGINT NOT NULL,
    at      TIMESTAMPTZ NOT NULL,
    kind    TEXT NOT NULL,
    payload JSONB NOT NULL,
    PRIMARY KEY (task_id, seq)
);

CREATE TABLE callback_outbox (
    id              BIGSERIAL PRIMARY KEY,
    task_id         UUID NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    url             TEXT NOT NULL,
    payload         JSONB NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    last_error      TEXT,
    delivered_at    TIMESTAMPTZ,
    expired_at      TIMESTAMPTZ
);
CREATE INDEX callback_outbox_due ON callback_outbox (next_attempt_at)
    WHERE delivered_at IS NULL AND expired_at IS NULL;
CREATE INDEX callback_outbox_task ON callback_outbox (task_id, id);

-- Credential store (SPEC 5); used by the secrets module. scope is 'global' or
-- 'project:<name>'; nonce and ciphertext are XChaCha20-Poly1305 output.
CREATE TABLE secrets (
    scope        TEXT NOT NULL,
    name         TEXT NOT NULL,
    version      INTEGER NOT NULL,
    nonce        BYTEA NOT NULL,
    ciphertext   BYTEA NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    last_used_at TIMESTAMPTZ,
    PRIMARY KEY (scope, name, version)
);

CREATE TABLE secret_audit (
    id      BIGSERIAL PRIMARY KEY,
    at      TIMESTAMPTZ NOT NULL,
    scope   TEXT NOT NULL,
    name    TEXT NOT NULL,
    version INTEGER,
    action  TEXT NOT NULL,
    actor   TEXT NOT NULL,
    detail  TEXT
);
CREATE INDEX secret_audit_secret ON secret_audit (scope, name, at);

-- One row: a known plaintext encrypted with the master key, to refuse a wrong key early.
CREATE TABLE master_key_check (
    id         SMALLINT PRIMARY KEY CHECK (id = 1),
    nonce      BYTEA NOT NULL,
    ciphertext BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
