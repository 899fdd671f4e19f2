-- The embedded backend's logs file. Times are Unix microseconds (exact, and ordered as integers);
-- attributes and exception are JSON text.

CREATE TABLE logs (
    id          BLOB PRIMARY KEY,
    project_id  BLOB NOT NULL,
    ts          INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    level       INTEGER NOT NULL,
    service     TEXT,
    environment TEXT,
    host        TEXT,
    message     TEXT NOT NULL,
    fingerprint INTEGER NOT NULL,
    trace_id    TEXT,
    span_id     TEXT,
    attributes  TEXT NOT NULL,
    exception   TEXT
) WITHOUT ROWID;

CREATE INDEX logs_project_ts ON logs (project_id, ts DESC, id DESC);
