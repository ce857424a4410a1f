//! Per-partner request rate limits held for the whole fleet: one GCRA row per partner in
//! PostgreSQL (`partner_rate_limit`), shared by every API instance.
//!
//! How it works: a partner with a limit of `n` requests per minute may send one request every
//! `T = 60 s / n` (the emission interval) with a burst of `n`. The row keeps the theoretical
//! arrival time (TAT) of the next request; a request conforms while `max(TAT, now) + T` is at
//! most `n × T` ahead of now, and then moves TAT on by `T`. Check and move are one autocommit
//! `insert … on conflict do update … returning` statement, so concurrent requests on any
//! instance serialise on the row lock for microseconds and never both take the last slot.
//! Time is the database's `now()`: all instances share one clock.
//!
//! Those statements run on a small pool of their own whose sessions have
//! `synchronous_commit = off`: the request does not wait for the WAL flush, and a crash of
//! PostgreSQL may lose the last few updates, which only forgives a few requests. Ingest itself
//! keeps full durability on the main pool.

use std::time::Duration;

use sqlx::PgPool;

use super::error::ApiError;
use crate::db::derived::DerivedPool;
use crate::partners::Partner;

/// Connections of the rate-limit pool: each statement holds one for well under a millisecond.
const POOL_CONNECTIONS: u32 = 4;

/// The shared rate limits, reached through a pool of their own (see the module doc).
pub struct PartnerRateLimits {
    pool: DerivedPool,
}

/// Why a request may not go ahead.
#[derive(Debug)]
pub enum RateLimitRefusal {
    /// Over the limit: `wait_secs` (rounded up, at least 1) until the next request conforms.
    Limited {
        limit_per_minute: u32,
        wait_secs: u64,
    },
    /// The shared state could not be read (the database is unreachable, or failed).
    Database(sqlx::Error),
}

impl From<RateLimitRefusal> for ApiError {
    fn from(refusal: RateLimitRefusal) -> Self {
        match refusal {
            RateLimitRefusal::Limited {
                limit_per_minute,
                wait_secs,
            } => ApiError::rate_limited(limit_per_minute, wait_secs),
            // Unreachable → 503, anything else → 500, as for every other query.
            RateLimitRefusal::Database(err) => ApiError::from(err),
        }
    }
}

impl PartnerRateLimits {
    /// Limits kept in the database of `pool`, through a pool of the same settings with
    /// `synchronous_commit = off` that follows `pool` across failovers. Connects lazily.
    pub fn new(pool: &PgPool) -> Self {
        let pool = DerivedPool::new(pool, POOL_CONNECTIONS, |options| {
            options.options([("synchronous_commit", "off")])
        });
        Self { pool }
    }

    /// `Ok` when the partner may make this request (and counts it), otherwise why not.
    pub async fn check(&self, partner: &Partner) -> Result<(), RateLimitRefusal> {
        let limit = partner.rate_limit_per_minute.max(1);
        let interval_us = emission_interval_us(limit);
        // `ahead_secs` (how far TAT is ahead of now) is only read when the request is refused:
        // the outer select sees the row as it was before this statement.
        let (allowed, ahead_secs): (bool, Option<f64>) = sqlx::query_as(
            "with attempt as (
                 insert into partner_rate_limit as r (partner_id, theoretical_arrival)
                 values ($1, now() + $2 * interval '1 microsecond')
                 on conflict (partner_id) do update
                     set theoretical_arrival =
                         greatest(r.theoretical_arrival, now()) + $2 * interval '1 microsecond'
                     where greatest(r.theoretical_arrival, now()) + $2 * interval '1 microsecond'
                           <= now() + $3 * interval '1 microsecond'
                 returning 1
             )
             select exists (select from attempt),
                    case when exists (select from attempt) then null
                         else (select extract(epoch from l.theoretical_arrival - now())::float8
                               from partner_rate_limit l where l.partner_id = $1)
                    end",
        )
        .bind(partner.id.as_str())
        .bind(interval_us)
        .bind(interval_us * i64::from(limit))
        .fetch_one(self.pool.pool())
        .await
        .map_err(RateLimitRefusal::Database)?;
        if allowed {
            return Ok(());
        }
        metrics::counter!("callingest_rate_limited_total", "partner_id" => partner.id.to_string())
            .increment(1);
        Err(RateLimitRefusal::Limited {
            limit_per_minute: limit,
            wait_secs: wait_secs(ahead_secs.unwrap_or(0.0), limit),
        })
    }
}

/// `T` in whole microseconds. Sums of `T` stay exact, so `n` requests at once are exactly
/// `n × T` ahead and the `n`-th still conforms.
fn emission_interval_us(limit_per_minute: u32) -> i64 {
    60_000_000 / i64::from(limit_per_minute.max(1))
}

/// Whole seconds until a refused request would conform, when TAT is `ahead_secs` ahead of now:
/// it conforms once TAT is no more than `(n - 1) × T` ahead. Rounded up, and never "retry in
/// 0 seconds".
fn wait_secs(ahead_secs: f64, limit_per_minute: u32) -> u64 {
    let limit = limit_per_minute.max(1);
    let tolerance =
        Duration::from_micros((emission_interval_us(limit) * i64::from(limit - 1)) as u64);
    let wait = ahead_secs - tolerance.as_secs_f64();
    wait.ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_is_until_the_partner_is_back_within_its_burst() {
        // 3 per minute, 3 at once: TAT is 60 s ahead; the next conforms 20 s later.
        assert_eq!(wait_secs(60.0, 3), 20);
        // Fractions round up.
        assert_eq!(wait_secs(59.2, 3), 20);
        assert_eq!(wait_secs(40.5, 3), 1);
        // Never "0 seconds", even when the slot is just about free.
        assert_eq!(wait_secs(40.0, 3), 1);
        // 2 per minute, as the published example: 30 s.
        assert_eq!(wait_secs(60.0, 2), 30);
    }

    #[test]
    fn a_burst_of_the_whole_limit_fits_exactly() {
        for limit in [1, 3, 7, 600, 10_000_000] {
            let t = emission_interval_us(limit);
            assert!(t > 0);
            assert!(t * i64::from(limit) <= 60_000_000);
        }
    }
}
