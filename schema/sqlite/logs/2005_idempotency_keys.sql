-- Idempotency keys' answers (embedded backend), written in the transaction that commits their batch, so a
-- retry after a restart or a crash is answered from them. Kept 10 minutes (API.md).
CREATE TABLE idempotency_keys (
    project_id BLOB NOT NULL,
    key TEXT NOT NULL,
    answer TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (project_id, key)
) WITHOUT ROWID;
