-- A project may name its Woodpecker repository by full name (`owner/name`), looked up when a
-- build follows CI, instead of by numeric id; the API never stores both. The SQLite twin in
-- ../sqlite/ describes the same column.
ALTER TABLE projects ADD COLUMN woodpecker_repo TEXT;
