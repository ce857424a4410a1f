//! Failed support sign-ins are limited per source address, so the admin token cannot be
//! guessed at the speed of the network.
//!
//! Held in this process's memory: with several API processes each allows the limit, and a
//! restart forgets the count. IPv6 addresses are counted per /64, the block one host usually
//! has to itself.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed sign-ins allowed from one address within [`WINDOW`].
pub const MAX_FAILURES: u32 = 10;
/// How long failures are remembered: the window starts at an address's first failure.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Addresses remembered before expired ones are swept out.
const SWEEP_AT: usize = 10_000;

#[derive(Default)]
pub struct LoginThrottle {
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

struct Failures {
    since: Instant,
    count: u32,
}

impl LoginThrottle {
    /// `Err(wait)` when `address` used up its failures: no sign-in is tried for it until then.
    pub fn check(&self, address: IpAddr, now: Instant) -> Result<(), Duration> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match failures.get(&key(address)) {
            Some(f) if f.count >= MAX_FAILURES && now < f.since + WINDOW => {
                Err(f.since + WINDOW - now)
            }
            _ => Ok(()),
        }
    }

    pub fn record_failure(&self, address: IpAddr, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= SWEEP_AT {
            failures.retain(|_, f| now < f.since + WINDOW);
        }
        let entry = failures.entry(key(address)).or_insert(Failures {
            since: now,
            count: 0,
        });
        if now >= entry.since + WINDOW {
            *entry = Failures {
                since: now,
                count: 0,
            };
        }
        entry.count += 1;
    }

    /// A successful sign-in clears the address's failures.
    pub fn record_success(&self, address: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(&key(address));
    }
}

fn key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::V6(segments.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_refused_after_its_failures_until_the_window_passes() {
        let throttle = LoginThrottle::default();
        let (address, other) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let start = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert!(throttle.check(address, start).is_ok());
            throttle.record_failure(address, start);
        }
        let wait = throttle
            .check(address, start + Duration::from_secs(60))
            .unwrap_err();
        assert_eq!(wait, WINDOW - Duration::from_secs(60));
        assert!(throttle.check(other, start).is_ok());
        assert!(throttle.check(address, start + WINDOW).is_ok());
    }

    #[test]
    fn ipv6_hosts_are_counted_per_64_block() {
        let throttle = LoginThrottle::default();
        let now = Instant::now();
        for i in 0..MAX_FAILURES {
            let address: IpAddr = format!("2001:db8:1:2::{i:x}").parse().unwrap();
            throttle.record_failure(address, now);
        }
        assert!(throttle
            .check("2001:db8:1:2:ffff::1".parse().unwrap(), now)
            .is_err());
        assert!(throttle
            .check("2001:db8:1:3::1".parse().unwrap(), now)
            .is_ok());
    }

    #[test]
    fn a_success_forgets_the_failures() {
        let throttle = LoginThrottle::default();
        let address = "192.0.2.1".parse().unwrap();
        let now = Instant::now();
        for _ in 0..MAX_FAILURES {
            throttle.record_failure(address, now);
        }
        throttle.record_success(address);
        assert!(throttle.check(address, now).is_ok());
    }
}
