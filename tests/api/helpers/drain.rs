//! Waiting for the service without guessing: [`TestApp::drain`] waits until nothing is left to
//! do, [`wait_for`] / [`wait_until`] wait for a condition a test expects by the clock.

use std::future::Future;
use std::time::Duration;

use sqlx::PgPool;
use tokio::time::Instant;

use super::app::TestApp;

/// How long [`TestApp::drain`] waits for the service to run out of work before failing.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the database (or a condition) is looked at while waiting: short, so a test waits
/// a few milliseconds past the moment it could go on.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

impl TestApp {
    /// Waits until the service has nothing left to do (see [`pending_work`]): every projection
    /// has applied the whole event log, and no fetch, transcription or callback job is left
    /// in the queues — due, leased or scheduled for a retry. Fails the test, listing what was
    /// still pending, after [`DRAIN_TIMEOUT`].
    ///
    /// For an app that runs the workers ([`Role::All`](callingest::config::Role::All)), or an
    /// API-only app whose database a test gave workers of its own
    /// (`callingest::app::spawn_background`); an API-only app alone does no work to wait for.
    pub async fn drain(&self) {
        self.drain_within(DRAIN_TIMEOUT).await;
    }

    /// [`TestApp::drain`] with a bound of its own (whisper transcription takes longer).
    pub async fn drain_within(&self, within: Duration) {
        let Err(pending) = until_idle(&self.pool, &self.privacy, within).await else {
            return;
        };
        let why = if self.has_stopped() {
            " (the service has stopped: TEST_LOG=1 shows why)".to_owned()
        } else if self.role().runs_workers() {
            String::new()
        } else {
            format!(
                " (this app runs no projectors or workers, role {:?}: build it with \
                 .role(Role::All), or drive the projectors by hand)",
                self.role()
            )
        };
        panic!(
            "the service did not run out of work within {within:?}{why}; still pending:\n  {}",
            pending.join("\n  ")
        );
    }
}

/// [`TestApp::drain`] for a database whose work other processes do (instances of the binary):
/// waits until [`pending_work`] on `pool` is empty, failing with what was left after `within`.
pub async fn drain_database(
    pool: &PgPool,
    privacy: &callingest_privacy::Privacy,
    within: Duration,
) {
    if let Err(pending) = until_idle(pool, privacy, within).await {
        panic!(
            "the service did not run out of work within {within:?}; still pending:\n  {}",
            pending.join("\n  ")
        );
    }
}

/// Polls [`pending_work`] until it is empty (`Ok`) or `within` has passed (`Err` with it).
async fn until_idle(
    pool: &PgPool,
    privacy: &callingest_privacy::Privacy,
    within: Duration,
) -> Result<(), Vec<String>> {
    let projections: Vec<String> = callingest_projections::all(privacy)
        .iter()
        .map(|projection| projection.name().to_owned())
        .collect();
    let deadline = Instant::now() + within;
    loop {
        let pending = pending_work(pool, &projections).await;
        if pending.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(pending);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// What the service still has to do, one line each, read in one statement (one snapshot):
/// - a projection whose checkpoint is behind the last event of the log, in the log's order
///   `(tx_id, global_position)` that projectors read it in;
/// - a row of `processing_job` (fetch or transcribe stage) or `callback_delivery`: the
///   projections delete a row when its work is over (the call completed or failed, the
///   callback delivered or given up), so any row is work due, leased or scheduled for later.
pub async fn pending_work(pool: &PgPool, projections: &[String]) -> Vec<String> {
    sqlx::query_scalar(
        "with last as (select tx_id, global_position from events
                       order by tx_id desc, global_position desc limit 1)
         select format('projection %s at %s of %s', p.name,
                       coalesce(c.global_position::text, 'nothing'), l.global_position)
         from unnest($1::text[]) as p(name)
         cross join last l
         left join projection_checkpoint c on c.name = p.name
         where c.name is null or (c.tx_id, c.global_position) < (l.tx_id, l.global_position)
         union all
         select format('%s job of %s (%s)', stage, call_aggregate_id, case
                when lease_until > now() then 'leased by ' || lease_owner
                when due_at <= now() then 'due'
                else 'due in ' || (due_at - now())::text end)
         from processing_job
         union all
         select format('callback delivery of %s (%s)', call_aggregate_id, case
                when lease_until > now() then 'leased by ' || lease_owner
                when due_at <= now() then 'due'
                else 'due in ' || (due_at - now())::text end)
         from callback_delivery",
    )
    .bind(projections)
    .fetch_all(pool)
    .await
    .expect("the queues and checkpoints are readable")
}

/// Polls `probe` until it gives `Ok`, and returns that value; fails the test saying `what` was
/// awaited and what the last `Err` said was seen instead, after `within`.
///
/// For what a test waits on by the clock or from outside the service — a retried callback's
/// backoff, a lease expiring after a kill, a replica catching up, a request reaching a test
/// server, an instance becoming ready. Work the service does as soon as it can is awaited by
/// [`TestApp::drain`].
pub async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        let seen = match probe().await {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        assert!(
            Instant::now() < deadline,
            "waited {within:?} for {what}, in vain; last seen: {seen}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// [`wait_for`] a condition: polls `condition` until it holds.
pub async fn wait_until<F, Fut>(what: &str, within: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(what, within, || {
        let holds = condition();
        async move {
            if holds.await {
                Ok(())
            } else {
                Err("not yet".to_owned())
            }
        }
    })
    .await
}
