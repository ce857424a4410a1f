-- Erasure (issue 16) reaches what its one transaction cannot: the spools of every worker
-- instance, and the `PersonalDataErased` events recorded after the keys are destroyed.

-- The recordings of erased calls (by SHA-256, as the spools name them). Every worker instance
-- reads the rows it has not seen in `(tx_id, id)` order, below the oldest running transaction
-- (as the projector reads the log), and deletes those files from its spool. Rows are deleted
-- once no spool can still hold the file (the spool's own 24 h, plus its hourly sweep).
create table erased_recording (
    id bigint generated always as identity primary key,
    recording_sha256 text not null,
    erased_at timestamptz not null default now(),
    tx_id xid8 not null default pg_current_xact_id()
);
create index erased_recording_order_idx on erased_recording (tx_id, id);
create index erased_recording_erased_at_idx on erased_recording (erased_at);

-- An erasure whose keys are destroyed but whose `PersonalDataErased` event is not recorded
-- yet: written in the transaction that destroys the keys, deleted once the event (which names
-- the row in its metadata, `erasure_id`) is in the log. A crash in between leaves the row, and
-- the next pass records the event, exactly once.
create table erasure_event_pending (
    id bigint generated always as identity primary key,
    call_aggregate_id text not null,
    scope text not null check (scope in ('call', 'agent')),
    reason text not null check (reason in ('request', 'retention')),
    erased_at timestamptz not null default now()
);
