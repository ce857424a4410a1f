-- Who changed which partner credential when (API keys and signing secrets are rotated by
-- support; the values themselves are never stored here).
create table partner_audit (
    id         bigint      generated always as identity primary key,
    partner_id text        not null references partner (partner_id),
    action     text        not null check (action in ('created', 'api_key_rotated', 'signing_secret_rotated')),
    actor      text        not null,
    at         timestamptz not null default now()
);
create index partner_audit_partner_idx on partner_audit (partner_id, at);

-- A read-only role for analysts: the read models, nothing else (not the event store, not the
-- partners and their secrets). Roles are cluster-wide, hence the guard; grants are per database.
do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'callingest_analyst') then
        create role callingest_analyst nologin;
    end if;
end
$$;
grant usage on schema public to callingest_analyst;
grant select on call, batch, daily_tenant_stats to callingest_analyst;
