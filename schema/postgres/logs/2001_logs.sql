-- The logs database. Partitioned by month on ts; partitions are created ahead by a scheduled job and a
-- DEFAULT partition catches the rest. BRIN on time (tiny, and logs arrive roughly in time order), btree on
-- (project_id, ts) because every query is keyed by project.

CREATE TABLE logs (
    id          uuid NOT NULL,
    project_id  uuid NOT NULL,
    ts          timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    -- 10, 20, 30, 40, 50 as Python's logging: DEBUG, INFO, WARNING, ERROR, CRITICAL.
    level       smallint NOT NULL,
    service     text,
    environment text,
    host        text,
    message     text NOT NULL,
    fingerprint bigint NOT NULL,
    trace_id    text,
    span_id     text,
    attributes  jsonb NOT NULL DEFAULT '{}',
    exception   jsonb
) PARTITION BY RANGE (ts);

CREATE TABLE logs_default PARTITION OF logs DEFAULT;
CREATE INDEX logs_ts_brin ON logs USING brin (ts);
CREATE INDEX logs_project_ts ON logs (project_id, ts DESC, id DESC);

-- The last queue entry each stream shard has committed, written in the same transaction as the COPY, so a
-- replay after a crash skips what is already stored.
CREATE TABLE queue_offsets (
    shard   integer PRIMARY KEY,
    last_id text NOT NULL
);
