-- Fair claims across partners (every worker pool): one partner's backlog must not hold other
-- partners' calls behind it. Workers take turns between the partners that have due work
-- (round robin over `job_queue_partner`), then take that partner's oldest due job.

-- The claim token of a lease (also added by the lease migration; harmless when present).
alter table processing_job add column if not exists lease_token uuid;
alter table callback_delivery add column if not exists lease_token uuid;

-- Whose turn it is, per pool: one row per partner with (possibly) queued work in that pool.
--   queue           'fetch' | 'transcribe' (processing_job.stage) or 'callbacks'
--   last_claimed_at when a worker last took this partner's job: the least recent goes first
--   idle_until      no claimable job before then (its next retry, or a short pause while its
--                   jobs are all in flight); lowered as soon as new work is queued
-- Rows are added by the projections that queue work, and removed by a claim that finds the
-- partner has no job left. Missing or stale rows only cost fairness, never work: when no turn
-- yields a job, the claim falls back to the oldest due job of any partner
-- (`processing_job_stage_due_idx`, `callback_delivery_due_idx`).
create table job_queue_partner (
    queue           text        not null,
    partner_id      text        not null,
    last_claimed_at timestamptz not null default '-infinity',
    idle_until      timestamptz not null default '-infinity',
    primary key (queue, partner_id)
);
create index job_queue_partner_turn_idx on job_queue_partner (queue, last_claimed_at);

-- A partner's oldest due job of a pool: the second statement of a claim.
create index processing_job_partner_due_idx on processing_job (stage, partner_id, due_at);

alter table callback_delivery
    add column partner_id text generated always as (split_part(call_aggregate_id, ':', 1)) stored;
create index callback_delivery_partner_due_idx on callback_delivery (partner_id, due_at);

insert into job_queue_partner (queue, partner_id)
    select distinct stage, partner_id from processing_job
    union
    select distinct 'callbacks', partner_id from callback_delivery;

