-- The search index (pipeline/store/logs/search.rs), as on PostgreSQL: for each project, gram and week since
-- the Unix epoch, the blocks (15 seconds of time) of that week whose logs hold the gram. Written only by the indexing job.
CREATE TABLE search_grams (
    project_id BLOB NOT NULL,
    gram INTEGER NOT NULL,
    week INTEGER NOT NULL,
    blocks BLOB NOT NULL,
    PRIMARY KEY (project_id, gram, week)
) WITHOUT ROWID;

CREATE TABLE search_state (
    id INTEGER PRIMARY KEY,
    indexed_through INTEGER NOT NULL
);

CREATE TABLE search_late (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id BLOB NOT NULL,
    block INTEGER NOT NULL
);
CREATE INDEX search_late_project ON search_late (project_id, block);
