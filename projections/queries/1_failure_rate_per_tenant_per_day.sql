-- Share of finished calls that failed, per day, partner and tenant.
select day, partner_id, tenant_id, calls, completed, failed,
       round(failed::numeric / nullif(completed + failed, 0), 3) as failure_rate
from daily_tenant_stats
order by day, partner_id, tenant_id;
