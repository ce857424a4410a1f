-- Batches with calls still in processing, oldest first.
select batch_id, partner_id, tenant_id, received_at, call_count,
       accepted_count + fetching_count + analysing_count as in_progress,
       completed_count, failed_count, duplicate_count
from batch
where accepted_count + fetching_count + analysing_count > 0
order by received_at;
