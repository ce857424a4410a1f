-- How much of the talking the agent does, on average, per agent (completed calls).
select partner_id, agent_id, count(*) as calls,
       round(avg(agent_talk_ms::numeric / nullif(agent_talk_ms + coalesce(customer_talk_ms, 0), 0)), 3)
           as mean_agent_talk_ratio
from call
where status = 'completed'
group by partner_id, agent_id
order by partner_id, agent_id;
