//! How far behind the primary a read replica is, as a bound on the age of what it shows.
//!
//! What it does: [`LagTracker::lag`] is the time since the last moment of which the replica is
//! known to hold every commit — so a read served by the replica now misses no commit
//! acknowledged more than that long ago. Reads go to the replica only while this stays within
//! `CALLINGEST_DB_READ_MAX_LAG_MS`.
//!
//! How it works: once a second the primary's WAL position is sampled (`pg_current_wal_lsn()`:
//! every commit acknowledged before the sample lies at or below it), then the replica's replay
//! position (`pg_last_wal_replay_lsn()`). The latest sample at or below the replay position
//! tells the moment the replica has caught up with. Samples the replica has not reached yet are
//! kept (a few) for the next check, so a replica that trails by milliseconds under a steady
//! write load still reads as about one check interval behind, not as lost. A replica that
//! stops replaying, or cannot be asked, simply stops advancing that moment: its lag grows.
//! No IO here: the watcher in [`super::replica`] feeds it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Samples of the primary kept while the replica has not reached them (one per check: with a
/// check a second, a replica more than this many seconds behind is measured by its oldest).
const MAX_PENDING_SAMPLES: usize = 64;

#[derive(Debug, Default)]
pub struct LagTracker {
    /// Primary WAL positions not yet replayed by the replica, and when each was read; oldest
    /// first.
    pending: VecDeque<(u64, Instant)>,
    /// The replica holds every commit acknowledged before this moment.
    caught_up_at: Option<Instant>,
    /// Bytes of WAL between the last primary sample and the replica's replay position.
    behind_bytes: Option<u64>,
}

impl LagTracker {
    /// The primary's WAL position `lsn`, read at `at`.
    pub fn primary_at(&mut self, lsn: u64, at: Instant) {
        if self.pending.len() == MAX_PENDING_SAMPLES {
            // Drop the second oldest: the oldest keeps the estimate conservative (a replica
            // past it is known to be no older than it) and the newest is needed to catch up.
            self.pending.remove(1);
        }
        self.pending.push_back((lsn, at));
    }

    /// The replica has replayed up to `lsn`.
    pub fn replica_replayed(&mut self, lsn: u64) {
        while let Some(&(sampled, at)) = self.pending.front() {
            if sampled > lsn {
                break;
            }
            self.caught_up_at = Some(self.caught_up_at.map_or(at, |known| known.max(at)));
            self.pending.pop_front();
        }
        self.behind_bytes = self
            .pending
            .back()
            .map(|&(newest, _)| newest.saturating_sub(lsn))
            .or(Some(0));
    }

    /// The read node is a primary itself (not in recovery): it holds every commit of now.
    pub fn replica_is_primary(&mut self, at: Instant) {
        self.pending.clear();
        self.caught_up_at = Some(at);
        self.behind_bytes = Some(0);
    }

    /// How old the replica's view may be at `now`; `None` until it has once been caught up.
    pub fn lag(&self, now: Instant) -> Option<Duration> {
        self.caught_up_at
            .map(|caught_up| now.saturating_duration_since(caught_up))
    }

    /// WAL bytes the replica had still to replay at the last check.
    pub fn behind_bytes(&self) -> Option<u64> {
        self.behind_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn an_unknown_replica_has_no_lag_to_trust() {
        let mut tracker = LagTracker::default();
        let start = Instant::now();
        assert_eq!(tracker.lag(start), None);
        tracker.primary_at(100, start);
        tracker.replica_replayed(99);
        assert_eq!(tracker.lag(start + secs(1)), None, "never caught up");
        assert_eq!(tracker.behind_bytes(), Some(1));
    }

    #[test]
    fn a_replica_that_keeps_up_lags_by_the_age_of_the_sample_it_reached() {
        let mut tracker = LagTracker::default();
        let start = Instant::now();
        tracker.primary_at(100, start);
        tracker.replica_replayed(100);
        assert_eq!(tracker.lag(start + secs(2)), Some(secs(2)));
        assert_eq!(tracker.behind_bytes(), Some(0));
        // Under load the replica trails the sample just taken but reaches it by the next check.
        tracker.primary_at(200, start + secs(1));
        tracker.replica_replayed(150);
        assert_eq!(tracker.lag(start + secs(1)), Some(secs(1)));
        tracker.primary_at(300, start + secs(2));
        tracker.replica_replayed(250);
        assert_eq!(tracker.lag(start + secs(2)), Some(secs(1)));
        assert_eq!(tracker.behind_bytes(), Some(50));
    }

    #[test]
    fn a_replica_that_stops_replaying_grows_older_until_it_catches_up() {
        let mut tracker = LagTracker::default();
        let start = Instant::now();
        tracker.primary_at(100, start);
        tracker.replica_replayed(100);
        for n in 1..=10 {
            tracker.primary_at(100 + n * 10, start + secs(n));
            tracker.replica_replayed(100);
        }
        assert_eq!(tracker.lag(start + secs(10)), Some(secs(10)));
        assert_eq!(tracker.behind_bytes(), Some(100));
        // Replay resumes and overtakes samples 1 to 7: the replica holds what was committed
        // before the 7th.
        tracker.replica_replayed(175);
        assert_eq!(tracker.lag(start + secs(10)), Some(secs(3)));
    }

    #[test]
    fn a_primary_serving_reads_is_current_and_the_pending_samples_are_bounded() {
        let mut tracker = LagTracker::default();
        let start = Instant::now();
        for n in 0..(MAX_PENDING_SAMPLES as u64 * 2) {
            tracker.primary_at(n, start + secs(n));
        }
        assert_eq!(tracker.pending.len(), MAX_PENDING_SAMPLES);
        // The oldest sample is kept: reaching it alone moves the moment no further than it.
        tracker.replica_replayed(0);
        assert_eq!(tracker.lag(start + secs(5)), Some(secs(5)));
        tracker.replica_is_primary(start + secs(200));
        assert_eq!(tracker.lag(start + secs(200)), Some(Duration::ZERO));
        assert_eq!(tracker.behind_bytes(), Some(0));
    }
}
