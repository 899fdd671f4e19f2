-- The auth database: users, projects and API keys. Sessions live in Redis (the shared backend's hot cache).
-- Versions 1xxx are the auth database's and 2xxx the logs database's, so both sets can share one database.

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    -- Stored lower-cased: e-mails are compared case-insensitively.
    email         text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL
);

CREATE TABLE projects (
    id                    uuid PRIMARY KEY,
    owner_id              uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name                  text NOT NULL,
    created_at            timestamptz NOT NULL,
    rate_limit_per_minute bigint NOT NULL,
    rate_limit_per_hour   bigint NOT NULL,
    daily_quota           bigint NOT NULL,
    retention_days        bigint NOT NULL,
    max_queue_depth       bigint NOT NULL
);
CREATE INDEX projects_owner ON projects (owner_id, created_at);

CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    project_id   uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name         text NOT NULL,
    -- `ledger_` and the first 8 characters, to tell keys apart; the key itself is never stored.
    prefix       text NOT NULL,
    -- SHA-256 of the full key.
    key_hash     bytea NOT NULL UNIQUE,
    -- Comma-separated scopes (`ingest`, `query`).
    scopes       text NOT NULL,
    created_at   timestamptz NOT NULL,
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_keys_project ON api_keys (project_id, created_at);

-- Used by the embedded backend and by the conformance suite; the shared backend keeps sessions in Redis.
CREATE TABLE sessions (
    id         uuid PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at timestamptz NOT NULL
);
