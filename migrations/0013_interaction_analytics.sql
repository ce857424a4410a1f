-- Interaction analytics (issue 14): turn-taking figures per call, transcript figures per call,
-- and per-agent daily sums analysts can re-aggregate. Calls analysed before this migration keep
-- null in every new column (no backfill: their events do not hold these figures).
alter table call
    add column detector_version          integer,
    add column talk_ratio                double precision,
    add column longest_monologue_ms      bigint,
    add column longest_customer_story_ms bigint,
    add column interactivity             double precision,
    add column patience_ms               bigint,
    add column patience_switches         integer,
    add column agent_turns               integer,
    add column customer_turns            integer,
    add column agent_words               bigint,
    add column customer_words            bigint,
    add column agent_words_per_minute    double precision,
    add column customer_words_per_minute double precision,
    add column agent_questions           integer,
    add column customer_questions        integer,
    add column agent_word_share          double precision;

-- Per day (of the call's start, UTC) x partner x tenant x sub-tenant x agent: sums, counts and
-- maxima only, so rows add up across days, tenants and sub-tenants; means are computed when read.
create table agent_daily_stats (
    day                              date             not null,
    partner_id                       text             not null,
    tenant_id                        text             not null,
    sub_tenant_id                    text             not null,
    agent_id                         text             not null,
    calls                            integer          not null,
    completed                        integer          not null,
    failed                           integer          not null,
    recording_ms                     bigint           not null,
    agent_talk_ms                    bigint           not null,
    customer_talk_ms                 bigint           not null,
    talk_ratio_sum                   double precision not null,
    talk_ratio_calls                 integer          not null,
    longest_monologue_ms_sum         bigint           not null,
    longest_monologue_calls          integer          not null,
    longest_monologue_ms_max         bigint,
    longest_customer_story_ms_sum    bigint           not null,
    longest_customer_story_calls     integer          not null,
    longest_customer_story_ms_max    bigint,
    interactivity_sum                double precision not null,
    interactivity_calls              integer          not null,
    patience_ms_sum                  bigint           not null,
    patience_calls                   integer          not null,
    agent_turns                      bigint           not null,
    customer_turns                   bigint           not null,
    transcribed_calls                integer          not null,
    agent_words                      bigint           not null,
    customer_words                   bigint           not null,
    agent_questions                  bigint           not null,
    customer_questions               bigint           not null,
    transcribed_agent_talk_minutes   double precision not null,
    transcribed_customer_talk_minutes double precision not null,
    primary key (day, partner_id, tenant_id, sub_tenant_id, agent_id)
);
-- The partner endpoint reads one agent over a range of days.
create index agent_daily_stats_agent_idx on agent_daily_stats (partner_id, agent_id, day);

grant select on agent_daily_stats to callingest_analyst;
