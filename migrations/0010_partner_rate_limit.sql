-- Fleet-wide request rate limits: one GCRA state row per partner, shared by every API instance.
-- `theoretical_arrival` is the GCRA "theoretical arrival time": the partner's requests are
-- conforming while it is at most (limit - 1) emission intervals ahead of now. The row is written
-- by one autocommit statement per request with synchronous_commit off, so a crash may forget
-- the last few writes: that only forgives a few requests.
create table partner_rate_limit (
    partner_id          text        primary key references partner (partner_id) on delete cascade,
    theoretical_arrival timestamptz not null
);

-- Updated hundreds of times a second for a busy partner: leave room on each page so every
-- update stays HOT (tat is not indexed) and pruning keeps the table small.
alter table partner_rate_limit set (fillfactor = 50);
