-- Reading one log by id (GET /v1/logs/{id}) had only the (project_id, ts, id) btree, which cannot seek on
-- id: a project's whole index was read, ~90 ms at a million logs. Ids are UUIDv7 and rows are appended in
-- roughly id order, so a BRIN index on id finds the few blocks holding one (~0.8 ms at a million logs),
-- costs ~3% on COPY (a btree on id cost ~25%), and stays a few pages small. The queue workers summarize new
-- page ranges every 5 s (unsummarized ranges are read in full).
CREATE INDEX logs_id_brin ON logs USING brin (id) WITH (pages_per_range = 16);
