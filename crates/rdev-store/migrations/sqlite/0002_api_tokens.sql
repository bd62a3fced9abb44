-- Named API tokens (docs/decisions.md, "API tokens"). Only the SHA-256 of each token is
-- stored: the token itself is shown once when it is created. The PostgreSQL twin in
-- ../postgres/ must describe the same table; timestamps are integer milliseconds (UTC).

CREATE TABLE api_tokens (
    name         TEXT PRIMARY KEY,
    token_hash   BLOB NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    scope        TEXT NOT NULL CHECK (scope IN ('read', 'build', 'admin')),
    -- JSON array of project names the token is limited to; empty: every project.
    projects     TEXT NOT NULL DEFAULT '[]',
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER
);
