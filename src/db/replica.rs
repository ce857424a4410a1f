//! Reads a read replica may serve (`DATABASE_READ_URL`): the partner's call list and batches,
//! the support search and page.
//!
//! What it does: [`Reads::read`] runs a query on the replica when one is connected and no more
//! than `CALLINGEST_DB_READ_MAX_LAG_MS` behind the primary (see [`super::lag`]), and on the
//! primary otherwise. It also asks the primary when the replica does not answer (down,
//! restarting, out of connections: reads keep working on the primary alone) and, for lookups,
//! when the replica does not have the row yet (a batch fetched right after its ingest). Reads
//! that must see the partner's own fresh write at once — a call fetched by id, its events, its
//! transcript — never come here: they stay on the primary.
//!
//! How it works: [`Replica::start`] connects in the background — the service starts and serves
//! without its replica, which is only an optimisation — through the same follower as the
//! primary pool (multi-host URL, `target_session_attrs`, re-resolved when the node changes).
//! Once a second a watcher samples the primary's WAL position and the replica's replay
//! position, which bounds how old the replica's view is.

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sqlx::PgPool;

use super::follower::Follower;
use super::lag::LagTracker;
use super::target::Target;
use crate::config::DatabaseConfig;

/// How often the replica's lag is measured.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long one measuring query may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a query may take on the replica before it is asked of the primary instead (a
/// replica that hangs must not hang the reads).
const REPLICA_QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait between attempts to connect to the replica.
const RECONNECT_MAX_WAIT: Duration = Duration::from_secs(5);

/// Where the read endpoints' queries go: the primary, and a replica when one is configured.
#[derive(Clone)]
pub struct Reads {
    primary: PgPool,
    replica: Option<Arc<Replica>>,
}

/// A read replica, connected in the background, and how far behind it is.
pub struct Replica {
    pool: OnceLock<PgPool>,
    follower: OnceLock<Arc<Follower>>,
    max_lag: Duration,
    lag: Mutex<LagTracker>,
}

/// What `/readyz` reports about the replica.
#[derive(Debug, Clone)]
pub struct ReplicaStatus {
    /// `host:port` of its node, once connected.
    pub host: Option<String>,
    /// How old its view may be (see [`super::lag`]); `None` until measured.
    pub lag: Option<Duration>,
    /// Whether reads go to it now (connected and within the allowed lag).
    pub serving_reads: bool,
}

/// Why a read that could have gone to the replica was served by the primary, or `Replica`.
#[derive(Debug, Clone, Copy)]
enum Served {
    Replica,
    /// Not connected yet, or further behind than allowed.
    Lagging,
    /// Not on the replica yet.
    NotFound,
    /// The replica failed or did not answer in time.
    Unavailable,
}

impl Served {
    fn count(self) {
        let outcome = match self {
            Served::Replica => "replica",
            Served::Lagging => "lagging",
            Served::NotFound => "not_found",
            Served::Unavailable => "unavailable",
        };
        metrics::counter!("callingest_replica_reads_total", "outcome" => outcome).increment(1);
    }
}

impl Reads {
    /// Every read on the primary (no `DATABASE_READ_URL`).
    pub fn primary_only(primary: PgPool) -> Self {
        Self {
            primary,
            replica: None,
        }
    }

    pub fn with_replica(primary: PgPool, replica: Arc<Replica>) -> Self {
        Self {
            primary,
            replica: Some(replica),
        }
    }

    pub fn replica(&self) -> Option<&Arc<Replica>> {
        self.replica.as_ref()
    }

    /// Runs `query` on the replica when it may serve reads, else (or when its answer is
    /// `missing`, or it fails as unavailable) on the primary. Other errors are returned as
    /// they are: a bad query would fail on the primary too.
    pub async fn read<T, F, Fut>(&self, query: F, missing: fn(&T) -> bool) -> Result<T, sqlx::Error>
    where
        F: Fn(PgPool) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        if let Some(replica) = &self.replica {
            let served = match replica.serving_pool() {
                None => Served::Lagging,
                Some(pool) => {
                    match tokio::time::timeout(REPLICA_QUERY_TIMEOUT, query(pool)).await {
                        Ok(Ok(found)) if !missing(&found) => {
                            Served::Replica.count();
                            return Ok(found);
                        }
                        Ok(Ok(_)) => Served::NotFound,
                        Ok(Err(err)) if super::means_unavailable(&err) => {
                            tracing::warn!(error = %err, "the read replica failed; reading from the primary");
                            Served::Unavailable
                        }
                        Ok(Err(err)) => return Err(err),
                        Err(_) => {
                            tracing::warn!(
                                timeout_ms = REPLICA_QUERY_TIMEOUT.as_millis() as u64,
                                "the read replica did not answer in time; reading from the primary"
                            );
                            Served::Unavailable
                        }
                    }
                }
            };
            served.count();
        }
        query(self.primary.clone()).await
    }
}

impl Replica {
    /// Connects to the replica of `target` in the background (retrying until it answers) and
    /// then measures its lag until `primary` is closed. Reads go to the primary meanwhile.
    pub fn start(
        target: Target,
        primary: PgPool,
        config: &DatabaseConfig,
        max_lag: Duration,
    ) -> Arc<Self> {
        let replica = Arc::new(Self {
            pool: OnceLock::new(),
            follower: OnceLock::new(),
            max_lag,
            lag: Mutex::new(LagTracker::default()),
        });
        let (watched, config) = (replica.clone(), config.clone());
        tokio::spawn(async move {
            watched.connect(target, &primary, &config).await;
            watched.watch(&primary).await;
        });
        replica
    }

    /// The replica's pool when it may serve reads now.
    fn serving_pool(&self) -> Option<PgPool> {
        let pool = self.pool.get()?;
        let lag = self.lag.lock().expect("not poisoned").lag(Instant::now())?;
        (lag <= self.max_lag).then(|| pool.clone())
    }

    pub fn status(&self) -> ReplicaStatus {
        // Read before `serving_pool` takes the same lock.
        let lag = self.lag.lock().expect("not poisoned").lag(Instant::now());
        ReplicaStatus {
            host: self.follower.get().map(|follower| follower.status().host),
            lag,
            serving_reads: self.serving_pool().is_some(),
        }
    }

    async fn connect(&self, target: Target, primary: &PgPool, config: &DatabaseConfig) {
        let mut waits = super::startup_backoff();
        loop {
            if primary.is_closed() {
                return;
            }
            match super::connect_pool("replica", target.clone(), config).await {
                Ok(database) => {
                    tracing::info!(host = %database.follower.status().host, "read replica connected");
                    let _ = self.follower.set(database.follower);
                    let _ = self.pool.set(database.pool);
                    return;
                }
                Err(err) => {
                    let wait = waits.next().unwrap_or(RECONNECT_MAX_WAIT);
                    tracing::warn!(error = %err, retry_in_ms = wait.as_millis() as u64, "read replica not reachable; reads go to the primary meanwhile");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Measures the lag once a second until the primary pool is closed (the service stops),
    /// then closes the replica's pool.
    async fn watch(&self, primary: &PgPool) {
        let Some(replica) = self.pool.get() else {
            return;
        };
        let mut every = tokio::time::interval(CHECK_INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !primary.is_closed() {
            every.tick().await;
            self.measure(primary, replica).await;
        }
        replica.close().await;
    }

    /// One sample of the primary's WAL position, then the replica's replay position.
    async fn measure(&self, primary: &PgPool, replica: &PgPool) {
        // Taken before the primary answers: every commit acknowledged before this moment is
        // at or below the position it reports.
        let sampled_at = Instant::now();
        let written: Option<i64> = tokio::time::timeout(
            CHECK_TIMEOUT,
            sqlx::query_scalar("select (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint")
                .fetch_one(primary),
        )
        .await
        .ok()
        .and_then(Result::ok);
        let replayed: Option<(bool, Option<i64>)> = tokio::time::timeout(
            CHECK_TIMEOUT,
            sqlx::query_as(
                "select pg_is_in_recovery(), (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint",
            )
            .fetch_one(replica),
        )
        .await
        .ok()
        .and_then(Result::ok);
        let mut lag = self.lag.lock().expect("not poisoned");
        if let Some(lsn) = written {
            lag.primary_at(lsn as u64, sampled_at);
        }
        match replayed {
            // A read node that is not in recovery is a primary: it shows every commit of now.
            Some((false, _)) => lag.replica_is_primary(Instant::now()),
            Some((true, Some(lsn))) => lag.replica_replayed(lsn as u64),
            // Not answering, or no WAL replayed yet: its view ages.
            Some((true, None)) | None => {}
        }
        let age = lag.lag(Instant::now());
        if let Some(age) = age {
            metrics::gauge!("callingest_database_replica_lag_seconds").set(age.as_secs_f64());
        }
        let serving = age.is_some_and(|age| age <= self.max_lag);
        metrics::gauge!("callingest_database_replica_serving_reads").set(if serving {
            1.0
        } else {
            0.0
        });
        if let Some(bytes) = lag.behind_bytes() {
            metrics::gauge!("callingest_database_replica_lag_bytes").set(bytes as f64);
        }
    }
}
