-- How much of the talking the agent does, on average, per agent (completed stereo calls; mono
-- calls have no talk ratio: one channel cannot tell the sides apart).
select partner_id, agent_id, count(talk_ratio) as calls,
       round(avg(talk_ratio)::numeric, 3) as mean_agent_talk_ratio
from call
where status = 'completed'
group by partner_id, agent_id
order by partner_id, agent_id;
