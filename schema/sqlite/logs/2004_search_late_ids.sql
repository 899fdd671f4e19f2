-- A late mark bounds the ids of the logs it marks (UUIDv7, in write order), so the index job reads those
-- logs again by id instead of every log of their block. Marks written before carry none and mean the
-- whole block.
ALTER TABLE search_late ADD COLUMN first_id BLOB;
ALTER TABLE search_late ADD COLUMN last_id BLOB;
