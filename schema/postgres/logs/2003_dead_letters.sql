-- Queue entries that cannot be written: an entry the worker cannot decode, or one whose logs PostgreSQL
-- refuses for a data reason (found by writing the entries of a refused batch one at a time). Each is kept
-- whole here, in the same transaction that moves its shard's offset past it, so it leaves the queue with
-- an outcome and an operator can list, replay or discard it (`ledger dead-letter`).
CREATE TABLE dead_letters (
    id bigserial PRIMARY KEY,
    shard integer NOT NULL,
    -- The Redis stream entry id it had.
    entry_id text NOT NULL,
    -- NULL when the entry did not say.
    project_id uuid,
    logs integer NOT NULL,
    -- `undecodable` or `refused`.
    reason text NOT NULL,
    -- What went wrong, for the operator.
    detail text NOT NULL,
    -- The entry's payload as it was queued (MessagePack), NULL when it had none.
    payload bytea,
    failed_at timestamptz NOT NULL DEFAULT now()
);
