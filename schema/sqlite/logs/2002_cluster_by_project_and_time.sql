-- Keep each project's logs together in time order: the table's key becomes (project_id, ts, id), so the
-- rows a query reads (one project, a time range) sit on neighbouring pages instead of being spread over
-- every project's. Measured on 1M logs of 10 projects (benches/query.rs): a level-filtered or full-text
-- query over a project's last 24 h read ~10x fewer pages. Ids stay unique through their own index.

CREATE TABLE logs_by_project (
    id          BLOB NOT NULL,
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
    exception   TEXT,
    PRIMARY KEY (project_id, ts, id)
) WITHOUT ROWID;

INSERT INTO logs_by_project
    SELECT id, project_id, ts, received_at, level, service, environment, host, message, fingerprint, trace_id,
           span_id, attributes, exception
    FROM logs;
DROP TABLE logs;
ALTER TABLE logs_by_project RENAME TO logs;
CREATE UNIQUE INDEX logs_id ON logs (id);
