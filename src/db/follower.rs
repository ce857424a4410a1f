//! Following the node a pool must talk to (the primary, for the writer) across failovers.
//!
//! How it works: the pool opens connections to one host at a time, the one [`Follower::resolve`]
//! chose by trying the hosts in order, as libpq does. Every new connection is checked
//! ([`Follower::check_new_session`]): a node in recovery where a writable session is wanted is
//! refused and wakes the follower. The follower's watch task asks the node once a second whether
//! it still matches (and whether commits are synchronous, for `/readyz` and `/metrics`); when it
//! does not, or does not answer, it tries the hosts again and points the pool at the one that
//! matches now. From that moment every connection older than the switch is discarded when it
//! is next acquired (a comparison of ages, no round trip), so the demoted node gets no more
//! queries. Nothing here needs a restart: work in flight fails (answered 503), retries land on
//! the new node.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::Notify;

use super::session::{choose, NodeState};
use super::target::{describe, Target};

/// How often a healthy pool's node is asked whether it still matches.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How often the hosts are tried again while none matches (mid-failover).
const RETRY_INTERVAL: Duration = Duration::from_millis(250);
/// How long a check or one host's connection attempt may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The host a pool uses, how it was chosen, and what its node last said.
pub struct Follower {
    /// Which pool, in logs and metrics: `primary` or `replica`.
    name: &'static str,
    target: Target,
    current: AtomicUsize,
    switched: SwitchClock,
    wake: Notify,
    last_state: Mutex<Option<NodeState>>,
}

/// What `/readyz` reports about a pool's node.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    /// `host:port` of the node.
    pub host: String,
    pub state: Option<NodeState>,
    /// Whether that state is the session wanted (for the writer: a writable primary).
    pub matches: bool,
}

impl Follower {
    pub fn new(name: &'static str, target: Target) -> Arc<Self> {
        Arc::new(Self {
            name,
            target,
            current: AtomicUsize::new(0),
            switched: SwitchClock::default(),
            wake: Notify::new(),
            last_state: Mutex::new(None),
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The options of the host in use.
    pub fn current_options(&self) -> PgConnectOptions {
        self.target.hosts()[self.current.load(Ordering::Relaxed)].clone()
    }

    /// The host in use and what its node said at the last check.
    pub fn status(&self) -> NodeStatus {
        let state = self.last_state.lock().expect("not poisoned").clone();
        let attrs = self.target.attrs();
        NodeStatus {
            host: describe(&self.current_options()),
            matches: state
                .as_ref()
                .is_some_and(|state| attrs.accepts(state) || attrs.falls_back_to_any()),
            state,
        }
    }

    /// Tries the hosts in order and returns the first whose session matches (for
    /// `prefer-standby`, else the first reachable), with what its node said; the pool is not
    /// changed. When none matches, the error says what each host answered (transient: a
    /// failover may be under way).
    pub async fn resolve(&self) -> Result<(usize, NodeState), sqlx::Error> {
        let attrs = self.target.attrs();
        let mut states = Vec::new();
        let mut answers = Vec::new();
        for host in self.target.hosts() {
            let state = match tokio::time::timeout(CHECK_TIMEOUT, probe(host)).await {
                Ok(Ok(state)) => {
                    answers.push(format!(
                        "{}: {}",
                        describe(host),
                        if state.in_recovery {
                            "in recovery"
                        } else if state.read_only {
                            "read-only"
                        } else {
                            "writable primary"
                        }
                    ));
                    Some(state)
                }
                Ok(Err(err)) => {
                    // A wrong password or a missing database is no failover: say so at once.
                    if !super::is_transient(&err) {
                        return Err(err);
                    }
                    answers.push(format!("{}: {}", describe(host), err));
                    None
                }
                Err(_) => {
                    answers.push(format!("{}: no answer", describe(host)));
                    None
                }
            };
            let matched = state.as_ref().is_some_and(|state| attrs.accepts(state));
            states.push(state);
            if matched {
                break;
            }
        }
        match choose(attrs, &states) {
            Some(index) => Ok((index, states[index].clone().expect("chosen hosts answered"))),
            // An Io error: transient for start-up and unavailable (503) for requests.
            None => Err(sqlx::Error::Io(std::io::Error::other(format!(
                "no host of the {} database is a {attrs} session ({})",
                self.name,
                answers.join("; ")
            )))),
        }
    }

    /// Points new connections at host `index` from now on.
    pub fn use_host(&self, index: usize, state: NodeState) {
        self.current.store(index, Ordering::Relaxed);
        self.record(state);
    }

    /// Whether a pooled connection of this age was opened before the last switch of host (so
    /// it may lead to the demoted node): the pool then closes it instead of handing it out.
    pub fn is_stale(&self, age: Duration) -> bool {
        self.switched.is_older(age)
    }

    /// The `after_connect` check of every new connection: one that does not match (the node
    /// was demoted since it was chosen) is refused, and the follower looks for the new one.
    pub async fn check_new_session(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        let state = NodeState::of(conn).await?;
        let attrs = self.target.attrs();
        if attrs.accepts(&state) || attrs.falls_back_to_any() {
            return Ok(());
        }
        self.wake.notify_one();
        Err(sqlx::Error::Io(std::io::Error::other(format!(
            "{} is no longer a {attrs} session (in recovery: {}, read-only: {}); looking for the node that is",
            describe(&self.current_options()),
            state.in_recovery,
            state.read_only
        ))))
    }

    /// Watches the node until the pool is closed; see the module documentation.
    pub fn spawn_watch(self: &Arc<Self>, pool: PgPool) -> tokio::task::JoinHandle<()> {
        let follower = self.clone();
        tokio::spawn(async move {
            let mut healthy = true;
            loop {
                let pause = if healthy {
                    CHECK_INTERVAL
                } else {
                    RETRY_INTERVAL
                };
                tokio::select! {
                    () = follower.wake.notified() => {}
                    () = tokio::time::sleep(pause) => {}
                }
                if pool.is_closed() {
                    return;
                }
                healthy = follower.check(&pool).await;
            }
        })
    }

    /// One look at the node in use; returns whether the pool has a matching node now.
    async fn check(&self, pool: &PgPool) -> bool {
        let attrs = self.target.attrs();
        let asked = tokio::time::timeout(CHECK_TIMEOUT, async {
            let mut conn = pool.acquire().await?;
            NodeState::of(&mut conn).await
        })
        .await;
        let demoted = match asked {
            Ok(Ok(state)) => {
                let accepted = attrs.accepts(&state);
                self.record(state);
                if accepted {
                    return true;
                }
                // `prefer-standby` fell back to a primary: keep it, but look for a standby.
                !attrs.falls_back_to_any()
            }
            // No answer (node down, restarting, or the pool refusing its new sessions): try
            // the hosts; the same one may well still be the right one.
            Ok(Err(_)) | Err(_) => false,
        };
        match self.resolve().await {
            Ok((index, state)) => {
                let before = self.current.load(Ordering::Relaxed);
                if index != before || demoted {
                    self.switch(pool, before, index, state);
                }
                true
            }
            Err(err) => {
                metrics::gauge!("callingest_database_primary", "pool" => self.name).set(0.0);
                tracing::warn!(pool = self.name, error = %err, "no matching database node yet");
                false
            }
        }
    }

    fn switch(&self, pool: &PgPool, before: usize, index: usize, state: NodeState) {
        pool.set_connect_options(self.target.hosts()[index].clone());
        self.use_host(index, state);
        self.switched.mark();
        metrics::counter!("callingest_database_failovers_total", "pool" => self.name).increment(1);
        tracing::warn!(
            pool = self.name,
            from = %describe(&self.target.hosts()[before]),
            to = %describe(&self.target.hosts()[index]),
            "database node changed: new connections go to the new node, older ones are dropped"
        );
    }

    fn record(&self, state: NodeState) {
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        metrics::gauge!("callingest_database_primary", "pool" => self.name)
            .set(flag(!state.in_recovery));
        metrics::gauge!("callingest_database_read_only", "pool" => self.name)
            .set(flag(state.read_only));
        metrics::gauge!("callingest_database_synchronous_commit", "pool" => self.name)
            .set(flag(state.commits_synchronously()));
        *self.last_state.lock().expect("not poisoned") = Some(state);
    }
}

/// When a pool last moved to another node, so connections opened before can be told apart by
/// their age alone.
pub struct SwitchClock {
    started: Instant,
    /// Milliseconds from `started` to the last switch, plus one (0: never switched).
    at: AtomicU64,
}

impl Default for SwitchClock {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            at: AtomicU64::new(0),
        }
    }
}

impl SwitchClock {
    /// The pool moves now.
    pub fn mark(&self) {
        let now = self.started.elapsed().as_millis() as u64 + 1;
        self.at.store(now, Ordering::Relaxed);
    }

    /// Whether a connection of this age was opened before the last move.
    pub fn is_older(&self, age: Duration) -> bool {
        match self.at.load(Ordering::Relaxed) {
            0 => false,
            at => {
                age > self
                    .started
                    .elapsed()
                    .saturating_sub(Duration::from_millis(at - 1))
            }
        }
    }
}

/// Connects to one host, asks its node, and closes.
async fn probe(host: &PgConnectOptions) -> Result<NodeState, sqlx::Error> {
    let mut conn = PgConnection::connect_with(host).await?;
    let state = NodeState::of(&mut conn).await;
    let _ = conn.close().await;
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connections_opened_before_the_last_switch_are_older() {
        let clock = SwitchClock::default();
        assert!(!clock.is_older(Duration::from_secs(3600)), "never switched");
        std::thread::sleep(Duration::from_millis(30));
        clock.mark();
        assert!(
            clock.is_older(Duration::from_millis(200)),
            "opened before the switch"
        );
        assert!(!clock.is_older(Duration::ZERO), "opened just now");
    }
}
