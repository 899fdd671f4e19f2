-- The embedded backend's accounts file: the same tables as schema/postgres/auth, in SQLite's types
-- (uuids as 16-byte blobs, times as RFC 3339 text).

CREATE TABLE users (
    id            BLOB PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at    TEXT NOT NULL
);

CREATE TABLE projects (
    id                    BLOB PRIMARY KEY,
    owner_id              BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name                  TEXT NOT NULL,
    created_at            TEXT NOT NULL,
    rate_limit_per_minute INTEGER NOT NULL,
    rate_limit_per_hour   INTEGER NOT NULL,
    daily_quota           INTEGER NOT NULL,
    retention_days        INTEGER NOT NULL,
    max_queue_depth       INTEGER NOT NULL
);
CREATE INDEX projects_owner ON projects (owner_id, created_at);

CREATE TABLE api_keys (
    id           BLOB PRIMARY KEY,
    project_id   BLOB NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    key_hash     BLOB NOT NULL UNIQUE,
    scopes       TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at   TEXT
);
CREATE INDEX api_keys_project ON api_keys (project_id, created_at);

CREATE TABLE sessions (
    id         BLOB PRIMARY KEY,
    user_id    BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at TEXT NOT NULL
);
