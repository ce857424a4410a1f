-- Read models and the queue tables that projections keep, and what they need to follow the
-- event log. Every table here can be rebuilt from `events` alone
-- (`callingest projections rebuild`); see projections/README.md for every column.

-- Where each projection is in the log: the (tx_id, global_position) of the last event applied.
create table projection_checkpoint (
    name            text        primary key,
    tx_id           xid8        not null default '0',
    global_position bigint      not null default 0,
    updated_at      timestamptz not null default now()
);

-- Wake projectors as soon as events commit (NOTIFY is delivered at commit, once per
-- transaction and channel).
create function notify_events_appended() returns trigger language plpgsql as $$
begin
    perform pg_notify('callingest_events', '');
    return null;
end;
$$;
create trigger events_notify after insert on events
    for each statement execute function notify_events_appended();

-- One row per call of a partner.
create table call (
    partner_id            text             not null,
    call_id               text             not null,
    tenant_id             text             not null,
    sub_tenant_id         text             not null,
    batch_id              uuid             not null,
    agent_id              text             not null,
    customer_id           text             not null,
    contact_number        text             not null,
    start_time            timestamptz      not null,
    end_time              timestamptz      not null,
    call_duration_ms      bigint           not null,
    has_callback          boolean          not null,
    status                text             not null
        check (status in ('accepted', 'fetching', 'analysing', 'completed', 'failed')),
    accepted_at           timestamptz      not null,
    fetch_started_at      timestamptz,
    fetched_at            timestamptz,
    completed_at          timestamptz,
    failed_at             timestamptz,
    processing_time_ms    bigint,
    fetch_attempts        integer          not null,
    duplicate_submissions integer          not null,
    error                 text,
    recording_bytes       bigint,
    recording_sha256      text,
    recording_format      text,
    recording_duration_ms bigint,
    sample_rate           integer,
    channels              smallint,
    codec                 text,
    agent_talk_ms         bigint,
    customer_talk_ms      bigint,
    silence_ratio         double precision,
    longest_silence_ms    bigint,
    overlap_ms            bigint,
    mean_dbfs             double precision,
    peak_dbfs             double precision,
    clipping_ratio        double precision,
    updated_at            timestamptz      not null,
    primary key (partner_id, call_id)
);
create index call_partner_status_idx on call (partner_id, status);
create index call_partner_accepted_idx on call (partner_id, accepted_at, call_id);
create index call_batch_idx on call (batch_id);

-- One row per submitted batch; the counts are of the calls it brought in, by their status now.
create table batch (
    batch_id        uuid        primary key,
    partner_id      text        not null,
    tenant_id       text        not null,
    sub_tenant_id   text        not null,
    received_at     timestamptz,
    call_count      integer     not null,
    accepted_count  integer     not null,
    fetching_count  integer     not null,
    analysing_count integer     not null,
    completed_count integer     not null,
    failed_count    integer     not null,
    duplicate_count integer     not null,
    updated_at      timestamptz not null
);
create index batch_partner_idx on batch (partner_id, received_at);

-- Per day (of the call's start, UTC) x partner x tenant.
create table daily_tenant_stats (
    day                     date             not null,
    partner_id              text             not null,
    tenant_id               text             not null,
    calls                   integer          not null,
    completed               integer          not null,
    failed                  integer          not null,
    total_recording_minutes double precision not null,
    mean_recording_minutes  double precision,
    primary key (day, partner_id, tenant_id)
);

-- Calls waiting to be processed: the work queue of the processing workers. Claimed with
-- FOR UPDATE SKIP LOCKED and a lease; a row goes away when its call completes or fails.
create table processing_job (
    call_aggregate_id text        primary key,
    partner_id        text        not null,
    call_id           text        not null,
    recording_url     text        not null,
    due_at            timestamptz not null,
    lease_until       timestamptz,
    lease_owner       text
);
create index processing_job_due_idx on processing_job (due_at);

create function notify_jobs_ready() returns trigger language plpgsql as $$
begin
    perform pg_notify('callingest_jobs', '');
    return null;
end;
$$;
create trigger processing_job_notify after insert or update of due_at on processing_job
    for each statement execute function notify_jobs_ready();
