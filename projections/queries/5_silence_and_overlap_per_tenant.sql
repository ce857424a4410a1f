-- Conversation shape per tenant: mean silence share, mean overlap and recorded minutes.
select partner_id, tenant_id, count(*) as calls,
       round(avg(silence_ratio)::numeric, 3) as mean_silence_ratio,
       round(avg(overlap_ms)) as mean_overlap_ms,
       round(sum(recording_duration_ms) / 60000.0, 2) as recorded_minutes
from call
where status = 'completed'
group by partner_id, tenant_id
order by partner_id, tenant_id;
