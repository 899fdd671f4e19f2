-- A late mark bounds the ids of the logs it marks (UUIDv7, in write order), so the index job reads those
-- logs again through the id BRIN instead of every log of their block. Marks written before carry none and
-- mean the whole block.
ALTER TABLE search_late ADD COLUMN first_id uuid, ADD COLUMN last_id uuid;
