-- Coaching view: per agent and ISO week, the means of the interaction figures, re-aggregated
-- from the daily sums (all tenants together).
select partner_id, agent_id, date_trunc('week', day)::date as week,
       sum(completed) as completed_calls,
       round((sum(talk_ratio_sum) / nullif(sum(talk_ratio_calls), 0))::numeric, 3) as mean_talk_ratio,
       round(sum(longest_monologue_ms_sum)::numeric / nullif(sum(longest_monologue_calls), 0))
           as mean_longest_monologue_ms,
       max(longest_monologue_ms_max) as longest_monologue_ms,
       round((sum(interactivity_sum) / nullif(sum(interactivity_calls), 0))::numeric, 2)
           as mean_switches_per_minute,
       round(sum(patience_ms_sum)::numeric / nullif(sum(patience_calls), 0)) as mean_patience_ms
from agent_daily_stats
group by partner_id, agent_id, date_trunc('week', day)
order by partner_id, agent_id, week;
