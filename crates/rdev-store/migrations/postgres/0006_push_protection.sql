-- Push protection (docs/security.md): what a secret found in the commits a build is about
-- to push does, and the paths of known test fixtures whose credential-shaped strings are
-- not findings. The SQLite twin in ../sqlite/ describes the same columns.

-- 'block' (nothing is pushed, the task fails with secret_in_commit) or 'warn'.
ALTER TABLE projects ADD COLUMN push_protection TEXT NOT NULL DEFAULT 'block'
    CHECK (push_protection IN ('block', 'warn'));
-- Glob patterns of allow-listed paths (JSON array of strings).
ALTER TABLE projects ADD COLUMN push_protection_allow JSONB NOT NULL DEFAULT '[]';
