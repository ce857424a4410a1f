//! Interaction analytics as the read models hold them: a call's figures (`call`) and an agent's
//! days (`agent_daily_stats`, means computed here from its sums and counts).

use chrono::NaiveDate;
use sqlx::PgPool;

/// How a call went as a conversation. Every figure is null for mono recordings (one channel
/// mixes both sides, so nobody can tell who talks), for calls analysed before these figures
/// existed, and where the figure's own note says so. Transcript figures need a transcript.
#[derive(Debug, Clone, Default, sqlx::FromRow, serde::Serialize)]
pub struct InteractionView {
    pub detector_version: Option<i32>,
    pub talk_ratio: Option<f64>,
    pub longest_monologue_ms: Option<i64>,
    pub longest_customer_story_ms: Option<i64>,
    pub interactivity: Option<f64>,
    pub patience_ms: Option<i64>,
    pub patience_switches: Option<i32>,
    pub agent_turns: Option<i32>,
    pub customer_turns: Option<i32>,
    pub agent_words: Option<i64>,
    pub customer_words: Option<i64>,
    pub agent_words_per_minute: Option<f64>,
    pub customer_words_per_minute: Option<f64>,
    pub agent_questions: Option<i32>,
    pub customer_questions: Option<i32>,
    pub agent_word_share: Option<f64>,
}

/// One day of one agent's calls (all tenants and sub-tenants the filter lets through). Means
/// are over the calls that have the figure: mono calls and calls analysed before the figures
/// existed count in `calls`/`completed_calls` only.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct AgentDayView {
    pub day: NaiveDate,
    pub calls: i64,
    pub completed_calls: i64,
    pub failed_calls: i64,
    pub agent_talk_minutes: f64,
    pub mean_talk_ratio: Option<f64>,
    pub mean_longest_monologue_ms: Option<f64>,
    pub longest_monologue_ms: Option<i64>,
    pub mean_longest_customer_story_ms: Option<f64>,
    pub mean_interactivity: Option<f64>,
    pub mean_patience_ms: Option<f64>,
    pub agent_questions_per_call: Option<f64>,
    pub customer_questions_per_call: Option<f64>,
    pub agent_words_per_minute: Option<f64>,
    pub agent_word_share: Option<f64>,
}

/// Which days and calls of an agent to report.
#[derive(Debug, Clone)]
pub struct AgentDaysFilter<'a> {
    pub partner_id: &'a str,
    pub agent_id: &'a str,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub tenant_id: Option<&'a str>,
    pub sub_tenant_id: Option<&'a str>,
}

/// Per day from `from` to `to` (both included), the agent's figures, oldest first.
pub async fn agent_days(
    pool: &PgPool,
    filter: &AgentDaysFilter<'_>,
) -> Result<Vec<AgentDayView>, sqlx::Error> {
    sqlx::query_as(
        "select day,
                sum(calls)::bigint as calls,
                sum(completed)::bigint as completed_calls,
                sum(failed)::bigint as failed_calls,
                sum(agent_talk_ms) / 60000.0::float8 as agent_talk_minutes,
                sum(talk_ratio_sum) / nullif(sum(talk_ratio_calls), 0) as mean_talk_ratio,
                sum(longest_monologue_ms_sum)::float8 / nullif(sum(longest_monologue_calls), 0)
                    as mean_longest_monologue_ms,
                max(longest_monologue_ms_max) as longest_monologue_ms,
                sum(longest_customer_story_ms_sum)::float8
                    / nullif(sum(longest_customer_story_calls), 0)
                    as mean_longest_customer_story_ms,
                sum(interactivity_sum) / nullif(sum(interactivity_calls), 0) as mean_interactivity,
                sum(patience_ms_sum)::float8 / nullif(sum(patience_calls), 0) as mean_patience_ms,
                sum(agent_questions)::float8 / nullif(sum(transcribed_calls), 0)
                    as agent_questions_per_call,
                sum(customer_questions)::float8 / nullif(sum(transcribed_calls), 0)
                    as customer_questions_per_call,
                sum(agent_words) / nullif(sum(transcribed_agent_talk_minutes), 0)
                    as agent_words_per_minute,
                sum(agent_words)::float8 / nullif(sum(agent_words + customer_words), 0)
                    as agent_word_share
         from agent_daily_stats
         where partner_id = $1 and agent_id = $2 and day between $3 and $4
           and ($5::text is null or tenant_id = $5)
           and ($6::text is null or sub_tenant_id = $6)
         group by day
         order by day",
    )
    .bind(filter.partner_id)
    .bind(filter.agent_id)
    .bind(filter.from)
    .bind(filter.to)
    .bind(filter.tenant_id)
    .bind(filter.sub_tenant_id)
    .fetch_all(pool)
    .await
}
