-- The search index (pipeline/store/logs/search.rs): for each project, gram (three folded characters of a
-- message) and week since the Unix epoch, the blocks (15 seconds of time) of that week whose logs hold the gram — a sorted list
-- of u16 when short, else a 40,320-bit bitmap. Written only by the indexing job, never on ingestion; read by
-- `q` queries to visit only the blocks that can match. The key order serves the read: one project, a few
-- grams, a range of weeks.
CREATE TABLE search_grams (
    project_id uuid NOT NULL,
    gram integer NOT NULL,
    week integer NOT NULL,
    blocks bytea NOT NULL,
    PRIMARY KEY (project_id, gram, week)
) WITH (fillfactor = 80);

-- Everything with a time before `indexed_through` (Unix microseconds, a block boundary) is indexed; one row.
CREATE TABLE search_state (
    id smallint PRIMARY KEY,
    indexed_through bigint NOT NULL
);

-- Blocks (15 s since the Unix epoch) of logs written with a time already behind the watermark, marked by the
-- writer in the logs' own transaction; queries visit them, the job indexes them and deletes the marks.
CREATE TABLE search_late (
    id bigserial PRIMARY KEY,
    project_id uuid NOT NULL,
    block bigint NOT NULL
);
CREATE INDEX search_late_project ON search_late (project_id, block);
