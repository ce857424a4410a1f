-- Events a projection could not decode or apply, parked so the projection goes on with every
-- other aggregate (issue 12). The events themselves stay in `events`, untouched: a row here
-- only says "this projection has not applied this event yet". `callingest projections retry`
-- applies them again (and removes the rows that now apply); a rebuild clears a projection's
-- rows and parks again whatever still fails. See projections/README.md.
create table projection_failure (
    projection      text        not null,
    global_position bigint      not null,
    tx_id           xid8        not null,
    aggregate_type  text        not null,
    aggregate_id    text        not null,
    sequence        bigint      not null,
    event_type      text        not null,
    -- Null: this event itself failed. Otherwise the global position of the failed event of the
    -- same aggregate this one waits behind (kept out so the aggregate's order is kept).
    held_behind     bigint,
    -- Why it failed; for a held event, why the event it waits behind failed.
    error           text        not null,
    failed_at       timestamptz not null default now(),
    primary key (projection, global_position)
);

-- Each page asks which aggregates are parked for its projection.
create index projection_failure_aggregate
    on projection_failure (projection, aggregate_type, aggregate_id);
