-- Crypto-shredding (issue 16): the data keys of every call, apart from the event log.
--
-- A schema of its own so it can be backed up, restored and expired on its own schedule: the
-- event log (and its backups) only hold personal fields sealed under these keys, so deleting
-- or nulling a key here erases the fields it sealed everywhere.
create schema if not exists keyring;

create table keyring.call_key (
    call_aggregate_id text primary key,
    partner_id text not null,
    -- AES-256-GCM data keys wrapped by the master key (nonce || ciphertext || tag); null once
    -- destroyed. The call key seals the customer's side, the agent key the agent's fields.
    call_key bytea,
    agent_key bytea,
    -- Keyed blind indexes (HMAC-SHA256 of the normalised value, per partner) that find a
    -- subject's calls without keeping the value; null once erased or when the value is absent.
    contact_number_index bytea,
    customer_email_index bytea,
    agent_email_index bytea,
    created_at timestamptz not null default now(),
    call_erased_at timestamptz,
    agent_erased_at timestamptz
);

create index call_key_contact_number_idx on keyring.call_key (partner_id, contact_number_index)
    where contact_number_index is not null;
create index call_key_customer_email_idx on keyring.call_key (partner_id, customer_email_index)
    where customer_email_index is not null;
create index call_key_agent_email_idx on keyring.call_key (partner_id, agent_email_index)
    where agent_email_index is not null;

-- A fixed text sealed under the master key by the first start, opened by every later one: a
-- wrong CALLINGEST_MASTER_KEY is refused at start with a clear message.
create table keyring.master_key_check (
    id int primary key check (id = 1),
    sealed bytea not null,
    created_at timestamptz not null default now()
);
