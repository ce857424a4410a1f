-- Processing time from acceptance to completion, median and 95th percentile, per partner.
select partner_id, count(*) as completed_calls,
       percentile_cont(0.5) within group (order by processing_time_ms) as p50_processing_ms,
       percentile_cont(0.95) within group (order by processing_time_ms) as p95_processing_ms
from call
where status = 'completed'
group by partner_id
order by partner_id;
