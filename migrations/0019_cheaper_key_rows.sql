-- Ingest pays for every key row (issue 16's speed budget): two of its costs made smaller, with
-- the same guarantees.

-- 1. The blind indexes on the HMAC alone. The HMAC is keyed per partner and per subject
--    already (privacy/src/blind.rs), so `partner_id` in front of it selected nothing more and
--    made every index entry longer. Lookups still filter on `partner_id` (tenant isolation), on
--    the rows the index finds.
drop index keyring.call_key_contact_number_idx;
drop index keyring.call_key_customer_email_idx;
drop index keyring.call_key_agent_email_idx;
create index call_key_contact_number_idx on keyring.call_key (contact_number_index)
    where contact_number_index is not null;
create index call_key_customer_email_idx on keyring.call_key (customer_email_index)
    where customer_email_index is not null;
create index call_key_agent_email_idx on keyring.call_key (agent_email_index)
    where agent_email_index is not null;

-- 2. The foreign key from `master_key_version` to `keyring.master_key` checked once per
--    statement instead of once per row. A foreign key locks the referenced row (`for key
--    share`) for every row inserted: fifty locks of the same row per batch. These triggers take
--    that lock once per version a statement writes, then check the versions exist, and a
--    deleted master key is checked against the rows still using it after the delete, once any
--    writer holding the lock has committed: the same guarantee (no key row wrapped by a key the
--    keyring no longer has), raised with the same SQLSTATE (23503) the callers already handle.
alter table keyring.call_key drop constraint call_key_master_key_version_fkey;

create function keyring.check_master_key_versions() returns trigger
language plpgsql as $$
declare
    missing int;
begin
    perform 1 from keyring.master_key
    where version in (select distinct master_key_version from written)
    for key share;
    select w.master_key_version into missing from written w
    where not exists (select 1 from keyring.master_key m where m.version = w.master_key_version)
    limit 1;
    if found then
        raise foreign_key_violation using message = format(
            'keyring.call_key: master key version %s is not in keyring.master_key', missing);
    end if;
    return null;
end $$;

-- A trigger with a transition table serves one event: one for inserts, one for updates.
create trigger call_key_master_key_inserted after insert on keyring.call_key
    referencing new table as written
    for each statement execute function keyring.check_master_key_versions();
create trigger call_key_master_key_updated after update on keyring.call_key
    referencing new table as written
    for each statement execute function keyring.check_master_key_versions();

create function keyring.check_master_key_unused() returns trigger
language plpgsql as $$
begin
    -- After the delete: a writer that held the row's lock has committed by now, and this
    -- statement's snapshot sees its rows.
    if exists (select 1 from keyring.call_key where master_key_version = old.version) then
        raise foreign_key_violation using message = format(
            'keyring.master_key: version %s still wraps rows of keyring.call_key', old.version);
    end if;
    return null;
end $$;

create trigger master_key_unused after delete or update of version on keyring.master_key
    for each row execute function keyring.check_master_key_unused();
