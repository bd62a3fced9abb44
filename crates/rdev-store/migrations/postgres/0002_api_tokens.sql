-- Named API tokens (docs/decisions.md, "API tokens"). Only the SHA-256 of each token is
-- stored: the token itself is shown once when it is created. The SQLite twin in ../sqlite/
-- must describe the same table.

CREATE TABLE api_tokens (
    name         TEXT PRIMARY KEY,
    token_hash   BYTEA NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    scope        TEXT NOT NULL CHECK (scope IN ('read', 'build', 'admin')),
    -- JSON array of project names the token is limited to; empty: every project.
    projects     JSONB NOT NULL DEFAULT '[]',
    created_at   TIMESTAMPTZ NOT NULL,
    last_used_at TIMESTAMPTZ
);
