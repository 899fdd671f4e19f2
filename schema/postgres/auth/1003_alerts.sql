-- Alert rules per project, what each rule has seen, and every notification it sent.
CREATE TABLE alert_rules (
    id            uuid PRIMARY KEY,
    project_id    uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name          text NOT NULL,
    kind          text NOT NULL,
    -- JSON: the kind's parameters, and the channel (type, url, routing key).
    params        text NOT NULL,
    channel       text NOT NULL,
    -- HMAC-SHA256 key of webhook signatures (empty for other channels).
    secret        text NOT NULL,
    cooldown_secs bigint NOT NULL,
    enabled       boolean NOT NULL,
    created_at    timestamptz NOT NULL,
    -- error_rate and query_count: whether the condition holds now, and how many times it began to.
    firing        boolean NOT NULL DEFAULT false,
    episode       bigint NOT NULL DEFAULT 0,
    last_fired_at timestamptz,
    -- new_error and regression: errors up to this time have been looked at.
    checked_until timestamptz NOT NULL
);
CREATE INDEX alert_rules_project ON alert_rules (project_id, created_at);

-- regression: when each fingerprint was last seen, as the rule last looked.
CREATE TABLE alert_seen (
    rule_id     uuid NOT NULL REFERENCES alert_rules (id) ON DELETE CASCADE,
    fingerprint bigint NOT NULL,
    last_seen   timestamptz NOT NULL,
    PRIMARY KEY (rule_id, fingerprint)
);

-- One row per notification: its key makes it once across instances (the insert that wins sends it).
CREATE TABLE alert_deliveries (
    rule_id         uuid NOT NULL REFERENCES alert_rules (id) ON DELETE CASCADE,
    event_key       text NOT NULL,
    status          text NOT NULL,
    at              timestamptz NOT NULL,
    attempts        bigint NOT NULL DEFAULT 0,
    response_status bigint,
    delivered       boolean NOT NULL DEFAULT false,
    -- The body sent (so another instance can finish a delivery), and until when an instance is at it.
    payload         text NOT NULL DEFAULT '',
    claimed_until   timestamptz,
    PRIMARY KEY (rule_id, event_key)
);
CREATE INDEX alert_deliveries_at ON alert_deliveries (rule_id, at);
CREATE INDEX alert_deliveries_pending ON alert_deliveries (delivered, claimed_until);
