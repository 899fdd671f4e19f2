-- Logs removed by the sample stage's rules end in their own outcomes; a project may carry its own rules
-- for the parse, redact and sample stages (JSON, as the projects API takes them; NULL: none).
ALTER TABLE usage_daily ADD COLUMN dropped_by_rule bigint NOT NULL DEFAULT 0;
ALTER TABLE usage_daily ADD COLUMN sampled_out bigint NOT NULL DEFAULT 0;
ALTER TABLE projects ADD COLUMN stages text;
