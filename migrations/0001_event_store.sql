-- The event store of postgres-es (its `events` and `snapshots` tables), extended so projections
-- can read the whole log in commit order: postgres-es itself keeps no global stream.

create table events (
    aggregate_type  text        not null,
    aggregate_id    text        not null,
    sequence        bigint      not null check (sequence >= 0),
    event_type      text        not null,
    event_version   text        not null,
    payload         jsonb       not null,
    metadata        jsonb       not null,
    -- Position in the log across all aggregates. Identity values are handed out before commit,
    -- so they can become visible out of order; readers pair them with tx_id (see DESIGN.md).
    global_position bigint      not null generated always as identity,
    -- The writing transaction: a reader only reads below the oldest transaction still running.
    tx_id           xid8        not null default pg_current_xact_id(),
    recorded_at     timestamptz not null default now(),
    primary key (aggregate_type, aggregate_id, sequence)
);

create unique index events_global_position_key on events (global_position);
create index events_commit_order_idx on events (tx_id, global_position);

-- Only needed if snapshots are used; postgres-es expects the table to exist.
create table snapshots (
    aggregate_type   text   not null,
    aggregate_id     text   not null,
    last_sequence    bigint not null check (last_sequence >= 0),
    current_snapshot bigint not null check (current_snapshot >= 0),
    payload          jsonb  not null,
    primary key (aggregate_type, aggregate_id, last_sequence)
);

-- Events are facts: never updated, never deleted (DESIGN.md invariant 6).
create function events_are_append_only() returns trigger language plpgsql as $$
begin
    raise exception 'events are append-only: % is not allowed', tg_op;
end;
$$;

create trigger events_append_only
    before update or delete on events
    for each row execute function events_are_append_only();
