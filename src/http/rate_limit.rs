//! Per-partner request rate limits (GCRA via governor), each partner with its own quota.
//! Limits are kept per process: with several API instances a partner's effective limit is the
//! sum over instances.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::partners::Partner;

#[derive(Default)]
pub struct PartnerRateLimits {
    limiters: Mutex<HashMap<String, (u32, Arc<DefaultDirectRateLimiter>)>>,
}

impl PartnerRateLimits {
    /// `Ok` when the partner may make this request, otherwise the whole seconds to wait.
    pub fn check(&self, partner: &Partner) -> Result<(), u64> {
        let limiter = self.limiter_for(partner);
        limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            // Round up, and never tell a client to retry "in 0 seconds".
            wait.as_secs_f64().ceil().max(1.0) as u64
        })
    }

    fn limiter_for(&self, partner: &Partner) -> Arc<DefaultDirectRateLimiter> {
        let per_minute = partner.rate_limit_per_minute.max(1);
        let mut limiters = self.limiters.lock().expect("rate limiter lock poisoned");
        match limiters.get(partner.id.as_str()) {
            Some((limit, limiter)) if *limit == per_minute => limiter.clone(),
            // New partner, or its limit was changed: start a fresh limiter with the new quota.
            _ => {
                let quota = Quota::per_minute(NonZeroU32::new(per_minute).expect("at least 1"));
                let limiter = Arc::new(RateLimiter::direct(quota));
                limiters.insert(partner.id.to_string(), (per_minute, limiter.clone()));
                limiter
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callingest_domain::values::PartnerId;

    fn partner(id: &str, per_minute: u32) -> Partner {
        Partner {
            id: PartnerId::parse(id).unwrap(),
            rate_limit_per_minute: per_minute,
        }
    }

    #[test]
    fn a_partner_over_its_limit_is_told_how_long_to_wait() {
        let limits = PartnerRateLimits::default();
        let p = partner("p", 2);
        assert!(limits.check(&p).is_ok());
        assert!(limits.check(&p).is_ok());
        let wait = limits.check(&p).unwrap_err();
        // Two per minute: one request every 30 seconds.
        assert!((29..=30).contains(&wait), "wait {wait}");
        // Another partner is not affected.
        assert!(limits.check(&partner("q", 2)).is_ok());
    }
}
