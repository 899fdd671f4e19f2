-- Usage per project per UTC day: every log ends in one outcome, counted here.
CREATE TABLE usage_daily (
    project_id            BLOB NOT NULL,
    day                   TEXT NOT NULL,
    accepted              INTEGER NOT NULL DEFAULT 0,
    rejected_rate_limited INTEGER NOT NULL DEFAULT 0,
    rejected_quota        INTEGER NOT NULL DEFAULT 0,
    rejected_backpressure INTEGER NOT NULL DEFAULT 0,
    rejected_invalid      INTEGER NOT NULL DEFAULT 0,
    bytes                 INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, day)
);
