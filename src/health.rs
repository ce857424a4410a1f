//! What the probes report: whether this instance has its database (connected and migrated, and
//! answering now) and, where it runs background work, whether that work is alive.
//!
//! [`Liveness`] is the heartbeat the background side keeps: whoever runs it calls
//! [`Liveness::tick`] while it is making progress; readiness turns red when the ticks stop for
//! longer than the liveness' allowed silence.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::db::follower::{Follower, NodeStatus};
use crate::db::replica::{Replica, ReplicaStatus};

/// How long a readiness probe waits for the database to answer.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// A heartbeat shared by the background work of an instance and its readiness probe. Cheap to
/// clone; every clone ticks the same heart.
#[derive(Clone)]
pub struct Liveness {
    inner: Arc<Heart>,
}

struct Heart {
    since: Instant,
    /// Milliseconds from `since` to the last tick, plus one (0: never ticked).
    last_tick: AtomicU64,
    max_silence: Duration,
}

impl Liveness {
    /// A heart that has not beaten yet (not alive) and counts as stopped after `max_silence`
    /// without a tick.
    pub fn new(max_silence: Duration) -> Self {
        Self {
            inner: Arc::new(Heart {
                since: Instant::now(),
                last_tick: AtomicU64::new(0),
                max_silence,
            }),
        }
    }

    /// Records that the background work is alive now.
    pub fn tick(&self) {
        let now = self.inner.since.elapsed().as_millis() as u64 + 1;
        self.inner.last_tick.store(now, Ordering::Relaxed);
    }

    /// Time since the last tick, `None` before the first.
    pub fn silence(&self) -> Option<Duration> {
        match self.inner.last_tick.load(Ordering::Relaxed) {
            0 => None,
            tick => Some(
                self.inner
                    .since
                    .elapsed()
                    .saturating_sub(Duration::from_millis(tick - 1)),
            ),
        }
    }

    /// Ticked, and not longer ago than the allowed silence.
    pub fn is_alive(&self) -> bool {
        self.silence()
            .is_some_and(|silence| silence <= self.inner.max_silence)
    }
}

/// The probes' view of one instance.
pub struct Health {
    pool: OnceLock<PgPool>,
    follower: OnceLock<Arc<Follower>>,
    replica: OnceLock<Arc<Replica>>,
    background: Option<Liveness>,
}

/// The answer of a readiness probe.
#[derive(Debug)]
pub enum Readiness {
    Ready,
    /// Not ready yet or any more, and why (for the probe's body and the operator).
    NotReady(NotReady),
}

#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    #[error("not ready: waiting for the database (connecting and migrating)")]
    Starting,
    #[error("not ready: the database does not answer")]
    DatabaseUnreachable(#[source] sqlx::Error),
    #[error("not ready: the database did not answer within {} s", PING_TIMEOUT.as_secs())]
    DatabaseSlow,
    #[error("not ready: the background work is not running")]
    BackgroundStopped,
    #[error(
        "not ready: the database node is not a writable primary (a failover may be under way)"
    )]
    NotPrimary,
}

impl Health {
    /// An instance still waiting for its database; `background` is the heartbeat of its
    /// background work, for the roles that run some.
    pub fn starting(background: Option<Liveness>) -> Self {
        Self {
            pool: OnceLock::new(),
            follower: OnceLock::new(),
            replica: OnceLock::new(),
            background,
        }
    }

    /// An instance that has its database and runs no background work.
    pub fn connected(pool: PgPool) -> Self {
        let health = Self::starting(None);
        health.database_ready(pool);
        health
    }

    /// The database is connected and migrated: from now on readiness pings it.
    pub fn database_ready(&self, pool: PgPool) {
        let _ = self.pool.set(pool);
    }

    /// The database is followed across failovers by `follower`: readiness reports its node.
    pub fn database_followed(&self, follower: Arc<Follower>) {
        let _ = self.follower.set(follower);
    }

    /// Reads may be served by `replica`: readiness reports its lag (a replica never makes the
    /// instance unready: reads fall back to the primary).
    pub fn database_replica(&self, replica: Arc<Replica>) {
        let _ = self.replica.set(replica);
    }

    /// The read replica's node and lag, when one is configured.
    pub fn replica(&self) -> Option<ReplicaStatus> {
        self.replica.get().map(|replica| replica.status())
    }

    /// The node of the database and what it said at the last check, once connected.
    pub fn database_node(&self) -> Option<NodeStatus> {
        self.follower.get().map(|follower| follower.status())
    }

    /// The database, once connected and migrated.
    pub fn pool(&self) -> Option<&PgPool> {
        self.pool.get()
    }

    /// The heartbeat of this instance's background work, if it runs any.
    pub fn background(&self) -> Option<&Liveness> {
        self.background.as_ref()
    }

    /// Ready when the database is connected, migrated and answers now, and the background work
    /// (where there is some) is alive.
    pub async fn readiness(&self) -> Readiness {
        let Some(pool) = self.pool.get() else {
            return Readiness::NotReady(NotReady::Starting);
        };
        match tokio::time::timeout(PING_TIMEOUT, sqlx::query("select 1").execute(pool)).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => return Readiness::NotReady(NotReady::DatabaseUnreachable(err)),
            Err(_) => return Readiness::NotReady(NotReady::DatabaseSlow),
        }
        if self.database_node().is_some_and(|node| !node.matches) {
            return Readiness::NotReady(NotReady::NotPrimary);
        }
        match &self.background {
            Some(liveness) if !liveness.is_alive() => {
                Readiness::NotReady(NotReady::BackgroundStopped)
            }
            _ => Readiness::Ready,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heart_is_alive_only_between_a_tick_and_its_allowed_silence() {
        let liveness = Liveness::new(Duration::from_millis(50));
        assert!(!liveness.is_alive(), "not alive before the first tick");
        assert_eq!(liveness.silence(), None);
        liveness.clone().tick();
        assert!(liveness.is_alive(), "a clone ticks the same heart");
        std::thread::sleep(Duration::from_millis(80));
        assert!(!liveness.is_alive(), "silent for longer than allowed");
        liveness.tick();
        assert!(liveness.is_alive());
    }
}
