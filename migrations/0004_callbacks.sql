-- Callback state on the call read model, and the queue of the callback saga.

alter table call
    add column callback_status           text
        check (callback_status in ('pending', 'delivered', 'abandoned')),
    add column callback_attempts         integer not null default 0,
    add column callback_last_status_code integer,
    add column callback_delivered_at     timestamptz;

-- One row per call whose outcome is to be sent to the partner's callback_url; claimed by the
-- saga with FOR UPDATE SKIP LOCKED and a lease. Removed when delivered or abandoned.
create table callback_delivery (
    call_aggregate_id text        primary key,
    due_at            timestamptz not null,
    lease_until       timestamptz,
    lease_owner       text
);
create index callback_delivery_due_idx on callback_delivery (due_at);

create function notify_callbacks_due() returns trigger language plpgsql as $$
begin
    perform pg_notify('callingest_callbacks', '');
    return null;
end;
$$;
create trigger callback_delivery_notify after insert or update of due_at on callback_delivery
    for each statement execute function notify_callbacks_due();
