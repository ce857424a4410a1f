-- Indexes that match the keyset pagination of the call listings exactly (newest first):
-- a partner's calls, optionally of one status, and all calls (support search).
drop index call_partner_status_idx;
create index call_partner_status_accepted_idx on call (partner_id, status, accepted_at, call_id);
create index call_accepted_idx on call (accepted_at, partner_id, call_id);
