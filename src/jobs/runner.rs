//! The loop every pool runs: claim, heartbeat, step, outcome (see the module root).

use std::sync::Arc;
use std::time::Duration;

use callingest_domain::call::{Call, CallCommand};
use callingest_projections::notifications::{wait_for, Wakeup};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::time::{sleep, sleep_until, Instant};
use tracing::Instrument;

use super::claim::{self, claim_next, Claim};
use super::metrics::{self, InFlight};
use super::record::{Recorded, Recorder};
use super::{Cancel, CancelReason, JobError, PoolSettings, Queue, Shutdown};

/// Longest sleep between looks at a queue when nothing notifies.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How long a cancelled step has to return before it is dropped where it stands (blocking
/// work it started then sees the stop flag and ends by itself).
const CANCEL_GRACE: Duration = Duration::from_millis(1_500);
/// Wait before retrying a renewal that failed (the database may be briefly unreachable).
const RENEW_RETRY: Duration = Duration::from_secs(1);

/// The work of one pool on one claimed job, up to its next recorded outcome.
#[async_trait::async_trait]
pub trait Step: Send + Sync + 'static {
    /// Takes the job to its next recorded outcome (through [`Job::record`]). Once
    /// [`Job::cancel`] is requested the step should return soon (within a second) with
    /// [`JobError::Cancelled`] without recording anything: the runner records what fits.
    async fn run(&self, job: &Job) -> Result<(), JobError>;

    /// What to record on the call when the runner gives the step up; `None`: nothing.
    fn give_up(&self, call: &Call, why: GiveUp, at: DateTime<Utc>) -> Option<CallCommand>;
}

/// Why the runner gave a step up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// It ran past the pool's maximum step duration: a failed attempt, with this reason.
    TimedOut { limit: Duration },
    /// The process drained and the grace period ended: the attempt is given back.
    Drained,
}

/// What a runner did with one look at its queue.
#[derive(Debug, PartialEq, Eq)]
pub enum JobOutcome {
    /// A row was claimed and its step run (to an outcome, or until it was cancelled).
    Processed,
    /// Nothing could be claimed (or the process drains).
    EmptyQueue,
}

/// A claimed job, as its step sees it.
pub struct Job {
    claim: Claim,
    cancel: Cancel,
    queue: &'static Queue,
    owner: String,
    recorder: Arc<Recorder>,
}

impl Job {
    pub fn call_aggregate_id(&self) -> &str {
        &self.claim.call_aggregate_id
    }

    pub fn claim(&self) -> &Claim {
        &self.claim
    }

    /// Requested when the step must stop (lease lost, too long, drain).
    pub fn cancel(&self) -> &Cancel {
        &self.cancel
    }

    /// The worker's name, as recorded in the events' metadata.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Runs `command` on the call and appends its events, if this claim still holds the row
    /// ([`JobError::LeaseLost`] otherwise). A refusal is an answer, not an error: the call moved
    /// on meanwhile (e.g. another worker finished it).
    pub async fn record(&self, command: CallCommand) -> Result<Recorded, JobError> {
        self.recorder
            .record_with(self.queue, &self.claim, &self.owner, |_| {
                Some(command.clone())
            })
            .await
    }

    /// Returns [`JobError::Cancelled`] if the step was asked to stop: for steps to call between
    /// their stages.
    pub fn check_cancelled(&self) -> Result<(), JobError> {
        if self.cancel.is_cancelled() {
            Err(JobError::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// One pool's runner, shared by its concurrent slots.
pub struct Runner {
    pool: PgPool,
    queue: &'static Queue,
    step: Arc<dyn Step>,
    settings: PoolSettings,
    recorder: Arc<Recorder>,
    shutdown: Shutdown,
}

impl Runner {
    pub fn new(
        pool: PgPool,
        privacy: &callingest_privacy::Privacy,
        queue: &'static Queue,
        step: Arc<dyn Step>,
        settings: PoolSettings,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            recorder: Arc::new(Recorder::new(pool.clone(), privacy)),
            pool,
            queue,
            step,
            settings,
            shutdown,
        }
    }

    pub fn queue(&self) -> &'static Queue {
        self.queue
    }

    pub fn settings(&self) -> PoolSettings {
        self.settings
    }

    /// Claims one job and runs it. Tests drive pools with this ("run until the queue is empty").
    pub async fn run_next(&self, owner: &str) -> Result<JobOutcome, JobError> {
        if self.shutdown.claiming_stopped() {
            return Ok(JobOutcome::EmptyQueue);
        }
        let Some(claim) = claim_next(&self.pool, self.queue, owner, self.settings.lease).await?
        else {
            return Ok(JobOutcome::EmptyQueue);
        };
        metrics::claimed(self.queue, claim.taken_over);
        let span = tracing::info_span!(
            "job",
            pool = self.queue.name,
            call = %claim.call_aggregate_id,
            worker = owner,
        );
        self.run_claimed(claim, owner).instrument(span).await?;
        Ok(JobOutcome::Processed)
    }

    /// One slot of the pool: claims and runs jobs until the process drains.
    pub async fn run(self: Arc<Self>, owner: String, mut wakeup: Wakeup) {
        while !self.shutdown.claiming_stopped() {
            let pause = match self.run_next(&owner).await {
                Ok(JobOutcome::Processed) => continue,
                Ok(JobOutcome::EmptyQueue) => None,
                Err(err) => {
                    tracing::error!(error = %crate::error_chain::ErrorChain(&err), pool = self.queue.name, "job failed");
                    Some(POLL_INTERVAL)
                }
            };
            tokio::select! {
                () = self.wait(&mut wakeup, pause) => {}
                () = self.shutdown.claiming_stops() => {}
            }
        }
    }

    /// Sleeps until the next row is due, a notification arrives, or the poll interval passes.
    async fn wait(&self, wakeup: &mut Wakeup, pause: Option<Duration>) {
        if let Some(pause) = pause {
            return sleep(pause).await;
        }
        let wait = match claim::next_due_in(&self.pool, self.queue).await {
            Ok(Some(due)) => due.min(POLL_INTERVAL),
            Ok(None) => POLL_INTERVAL,
            Err(err) => {
                tracing::warn!(error = %err, pool = self.queue.name, "cannot read the next due time");
                POLL_INTERVAL
            }
        };
        wait_for(wakeup, wait).await;
    }

    async fn run_claimed(&self, claim: Claim, owner: &str) -> Result<(), JobError> {
        if claim.taken_over {
            tracing::warn!("claimed a job whose previous lease expired");
        }
        let _in_flight = InFlight::start(self.queue);
        let started = Instant::now();
        let cancel = Cancel::new();
        // However this ends (even dropped, as when a test stops a service abruptly), blocking
        // work the step started is told to stop rather than run on unobserved.
        let _stop_leftovers = StopOnDrop(cancel.clone());
        let job = Job {
            claim,
            cancel: cancel.clone(),
            queue: self.queue,
            owner: owner.to_owned(),
            recorder: self.recorder.clone(),
        };
        // The heartbeat runs until the job is over, including what is recorded after a
        // cancellation; dropped (aborted) with this function.
        let heartbeat = AbortOnDrop(tokio::spawn(
            heartbeat(
                self.pool.clone(),
                self.queue,
                job.claim.clone(),
                self.settings,
                self.shutdown.clone(),
                cancel.clone(),
            )
            .in_current_span(),
        ));
        let ended = tokio::select! {
            ended = self.step.run(&job) => Some(ended),
            () = async { cancel.cancelled().await; sleep(CANCEL_GRACE).await } => None,
        };
        metrics::step_took(self.queue, started.elapsed());
        let result = match ended {
            Some(Ok(())) => {
                metrics::succeeded(self.queue);
                Ok(())
            }
            Some(Err(err)) if !err.is_cancellation() => {
                metrics::failed(self.queue);
                Err(err)
            }
            cancelled => {
                if cancelled.is_none() {
                    tracing::warn!("the step did not stop when asked; dropped");
                }
                self.give_up(&job).await
            }
        };
        drop(heartbeat);
        result
    }

    /// After a cancelled step: records what the reason calls for, and on a drain releases the
    /// row at once so another instance takes it.
    async fn give_up(&self, job: &Job) -> Result<(), JobError> {
        let why = match job.cancel.reason() {
            Some(CancelReason::TimedOut) => GiveUp::TimedOut {
                limit: self.settings.max_step,
            },
            Some(CancelReason::Drained) => GiveUp::Drained,
            Some(CancelReason::LeaseLost) | None => {
                // Another worker has the row (or will once the lease expires): nothing to do.
                job.cancel.cancel(CancelReason::LeaseLost);
                tracing::warn!("lease lost; the step stopped without recording");
                metrics::cancelled(self.queue);
                return Ok(());
            }
        };
        let step = self.step.clone();
        let recorded = self
            .recorder
            .record_with(self.queue, &job.claim, &job.owner, |call| {
                step.give_up(call, why, Utc::now())
            })
            .await;
        match why {
            GiveUp::TimedOut { limit } => {
                tracing::warn!(
                    limit_s = limit.as_secs(),
                    "step ran too long; cancelled as a failed attempt"
                );
                metrics::failed(self.queue);
            }
            GiveUp::Drained => {
                tracing::info!("step interrupted by the drain; its attempt is given back");
                metrics::cancelled(self.queue);
            }
        }
        if let Err(err) = &recorded {
            tracing::warn!(error = %crate::error_chain::ErrorChain(err), "could not record why the step stopped");
        }
        if why == GiveUp::Drained && !matches!(recorded, Err(JobError::LeaseLost { .. })) {
            claim::release(&self.pool, self.queue, &job.claim).await?;
        }
        recorded.map(|_| ()).or_else(|err| match err {
            JobError::LeaseLost { .. } => Ok(()),
            other => Err(other),
        })
    }
}

/// Keeps the claim's lease alive every lease/3 and cancels the step when the lease is lost
/// (expired by the local clock since the last successful renewal, or taken over), when the
/// step outlives the pool's maximum duration, or when the drain interrupts it. A renewal that
/// fails (the database briefly unreachable) is retried; only the lease running out stops the
/// step.
async fn heartbeat(
    pool: PgPool,
    queue: &'static Queue,
    claim: Claim,
    settings: PoolSettings,
    shutdown: Shutdown,
    cancel: Cancel,
) {
    let claimed = Instant::now();
    let lease = settings.lease;
    let every = lease / 3;
    let deadline = claimed + settings.max_step;
    // Measured from before the claim's own statement finished, so never later than the
    // database's idea of the expiry.
    let mut expires = claimed + lease;
    let mut next_renewal = claimed + every;
    let (renewed_tx, mut renewed_rx) = mpsc::channel(1);
    let mut renewing = false;
    loop {
        tokio::select! {
            () = sleep_until(next_renewal), if !renewing => {
                renewing = true;
                let (pool, claim, tx) = (pool.clone(), claim.clone(), renewed_tx.clone());
                // Its own task, so a slow database delays neither the expiry check nor the
                // deadline; an outdated renewal is harmless (it needs the token).
                tokio::spawn(async move {
                    let sent = Instant::now();
                    let result = claim::renew(&pool, queue, &claim, lease).await;
                    let _ = tx.send((sent, result)).await;
                });
            }
            Some((sent, result)) = renewed_rx.recv() => {
                renewing = false;
                match result {
                    Ok(true) => {
                        metrics::renewed(queue);
                        expires = sent + lease;
                        next_renewal = sent + every;
                    }
                    Ok(false) => {
                        if !cancel.is_cancelled() {
                            tracing::warn!("lease taken over or let go; stopping the step");
                        }
                        cancel.cancel(CancelReason::LeaseLost);
                        return;
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "lease renewal failed; retrying");
                        next_renewal = Instant::now() + RENEW_RETRY;
                    }
                }
            }
            () = sleep_until(expires) => {
                tracing::warn!("lease expired without renewal; stopping the step");
                cancel.cancel(CancelReason::LeaseLost);
                return;
            }
            () = sleep_until(deadline), if !cancel.is_cancelled() => {
                cancel.cancel(CancelReason::TimedOut);
            }
            () = shutdown.interrupted(), if !cancel.is_cancelled() => {
                cancel.cancel(CancelReason::Drained);
            }
        }
    }
}

struct StopOnDrop(Cancel);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop().request();
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
