-- Issue 16, the two parts that change what is already stored.
--
-- 1. `callingest privacy encrypt-existing`: events written before sealing hold personal fields
--    in clear. The one exception to the append-only rule (DESIGN.md invariant 6): inside a
--    transaction that says so (`set local callingest.rewrite = 'encrypt-existing'`), a clear
--    `CallAccepted` or `TranscriptProduced` may have its payload replaced by its sealed form, and
--    nothing else of the row may change (ids, sequence, type, version, metadata, position,
--    writing transaction, time). Deletes stay refused, always. Every run is recorded in
--    `event_rewrite`.
create or replace function events_are_append_only() returns trigger language plpgsql as $$
begin
    if tg_op = 'UPDATE'
       and current_setting('callingest.rewrite', true) = 'encrypt-existing'
       and old.aggregate_type = 'Call'
       and old.event_type in ('CallAccepted', 'TranscriptProduced')
       and (new.aggregate_type, new.aggregate_id, new.sequence, new.event_type, new.event_version,
            new.metadata, new.global_position, new.tx_id, new.recorded_at)
           is not distinct from
           (old.aggregate_type, old.aggregate_id, old.sequence, old.event_type, old.event_version,
            old.metadata, old.global_position, old.tx_id, old.recorded_at)
       -- Only clear to sealed: a sealed payload is never rewritten.
       and not (old.payload -> old.event_type ? 'sealed')
       and (new.payload -> new.event_type ? 'sealed')
    then
        return new;
    end if;
    raise exception 'events are append-only: % is not allowed', tg_op;
end;
$$;

-- One row per run of a rewrite of the event log: who ran it from where, and what it changed.
-- Counts are updated in the transaction of each batch, so an interrupted run shows what it did.
create table event_rewrite (
    run_id bigint generated always as identity primary key,
    kind text not null check (kind in ('encrypt-existing')),
    started_at timestamptz not null default now(),
    finished_at timestamptz,
    database_user text not null default current_user,
    client_address inet default inet_client_addr(),
    -- The host name of the machine the command ran on.
    host text not null,
    calls_rewritten bigint not null default 0,
    events_rewritten bigint not null default 0,
    -- The lowest and highest `events.global_position` rewritten.
    first_position bigint,
    last_position bigint
);

-- 2. Master-key rotation. Every master key still wrapping some key row has a version here, with
--    a text sealed under it (a start opens these to learn which configured key is which version,
--    and refuses keys that open none). Exactly one is current: it wraps new key rows. During a
--    rotation a second row exists (the new key before `rotate-master-key` makes it current, the
--    previous one after); the command deletes the previous one once no key row uses it. This
--    replaces the single `master_key_check` (its key becomes version 1).
create table keyring.master_key (
    version int primary key check (version > 0),
    sealed_check bytea not null,
    is_current boolean not null,
    created_at timestamptz not null default now()
);
create unique index master_key_one_current on keyring.master_key (is_current) where is_current;

insert into keyring.master_key (version, sealed_check, is_current, created_at)
select 1, sealed, true, created_at from keyring.master_key_check;
drop table keyring.master_key_check;

-- Which master key wrapped a row's data keys (and keyed its blind indexes). The foreign key
-- makes a row wrapped by a retired key impossible: an instance still running with only the old
-- key fails loudly instead of writing keys nobody will be able to open.
-- No index on it: rotation walks the table in key order once, and ingest pays for every index.
alter table keyring.call_key
    add column master_key_version int not null default 1 references keyring.master_key (version);
