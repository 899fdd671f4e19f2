-- Usage per project per UTC day: every log ends in one outcome, counted here.
CREATE TABLE usage_daily (
    project_id            uuid NOT NULL,
    day                   date NOT NULL,
    accepted              bigint NOT NULL DEFAULT 0,
    rejected_rate_limited bigint NOT NULL DEFAULT 0,
    rejected_quota        bigint NOT NULL DEFAULT 0,
    rejected_backpressure bigint NOT NULL DEFAULT 0,
    rejected_invalid      bigint NOT NULL DEFAULT 0,
    bytes                 bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, day)
);
