-- Alert rules per project, what each rule has seen, and every notification it sent.
CREATE TABLE alert_rules (
    id            BLOB PRIMARY KEY,
    project_id    BLOB NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    kind          TEXT NOT NULL,
    -- JSON: the kind's parameters, and the channel (type, url, routing key).
    params        TEXT NOT NULL,
    channel       TEXT NOT NULL,
    -- HMAC-SHA256 key of webhook signatures (empty for other channels).
    secret        TEXT NOT NULL,
    cooldown_secs INTEGER NOT NULL,
    enabled       INTEGER NOT NULL,
    created_at    TEXT NOT NULL,
    -- error_rate and query_count: whether the condition holds now, and how many times it began to.
    firing        INTEGER NOT NULL DEFAULT 0,
    episode       INTEGER NOT NULL DEFAULT 0,
    last_fired_at TEXT,
    -- new_error and regression: errors up to this time have been looked at.
    checked_until TEXT NOT NULL
);
CREATE INDEX alert_rules_project ON alert_rules (project_id, created_at);

-- regression: when each fingerprint was last seen, as the rule last looked.
CREATE TABLE alert_seen (
    rule_id     BLOB NOT NULL REFERENCES alert_rules (id) ON DELETE CASCADE,
    fingerprint INTEGER NOT NULL,
    last_seen   TEXT NOT NULL,
    PRIMARY KEY (rule_id, fingerprint)
);

-- One row per notification: its key makes it once across instances (the insert that wins sends it).
CREATE TABLE alert_deliveries (
    rule_id         BLOB NOT NULL REFERENCES alert_rules (id) ON DELETE CASCADE,
    event_key       TEXT NOT NULL,
    status          TEXT NOT NULL,
    at              TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    response_status INTEGER,
    delivered       INTEGER NOT NULL DEFAULT 0,
    -- The body sent (so another instance can finish a delivery), and until when an instance is at it.
    payload         TEXT NOT NULL DEFAULT '',
    claimed_until   TEXT,
    PRIMARY KEY (rule_id, event_key)
);
CREATE INDEX alert_deliveries_at ON alert_deliveries (rule_id, at);
CREATE INDEX alert_deliveries_pending ON alert_deliveries (delivered, claimed_until);
