//! The job runner: one loop for the three worker pools (fetch + analysis, transcription,
//! callback delivery), which differ only in their [`Queue`], their [`PoolSettings`] and the
//! [`Step`] they run.
//!
//! A job goes through the same stages in every pool:
//! 1. **claim** ([`claim::claim_next`]): one short transaction sets a short lease and a fresh
//!    token on the row (no transaction stays open across the work, which would hold back every
//!    reader of the event log);
//! 2. **heartbeat**: while the step runs, the lease is renewed every lease/3, and only while
//!    the row still carries the claim's token;
//! 3. **step**: the pool's work, which records its outcome on the call through [`Job::record`]:
//!    the events are appended in one transaction with a check that the token still holds the
//!    row, so a holder that lost its lease cannot record;
//! 4. **cancellation**: the step is cancelled (cooperatively, through [`Cancel`]) when its
//!    lease expired or was taken over, when it ran longer than the pool's maximum step
//!    duration (then it counts as a failed attempt), or when a graceful drain ran out of time
//!    (then its attempt is given back and its lease released at once).
//!
//! A worker that dies keeps its rows only until their leases expire (30 s by default), however
//! long its jobs were.

mod cancel;
pub mod claim;
mod error;
mod metrics;
mod record;
mod runner;

use std::time::Duration;

pub use cancel::{Cancel, CancelReason, Shutdown};
pub use claim::{claim_next, Claim};
pub use error::JobError;
pub use metrics::record_queue_metrics;
pub use record::Recorded;
pub use runner::{GiveUp, Job, JobOutcome, Runner, Step};

/// A queue of work kept by a projection, as one pool of workers sees it.
#[derive(Debug)]
pub struct Queue {
    /// The pool's name in metrics (`pool` label) and logs.
    pub name: &'static str,
    pub table: &'static str,
    /// SQL condition on the table that selects this queue's rows (`true` for all of them).
    pub rows: &'static str,
    /// Channel the table's trigger notifies when a row is created or rescheduled.
    pub channel: &'static str,
}

/// Calls to fetch and analyse.
pub const FETCH: Queue = Queue {
    name: "fetch",
    table: "processing_job",
    rows: "stage = 'fetch'",
    channel: "callingest_jobs",
};
/// Analysed calls waiting for their transcript: the same table, its own pool of workers.
pub const TRANSCRIBE: Queue = Queue {
    name: "transcribe",
    table: "processing_job",
    rows: "stage = 'transcribe'",
    channel: "callingest_jobs",
};
/// Call outcomes to deliver to partners' callback URLs.
pub const CALLBACKS: Queue = Queue {
    name: "callbacks",
    table: "callback_delivery",
    rows: "true",
    channel: "callingest_callbacks",
};

/// Every queue, for metrics.
pub const QUEUES: [&Queue; 3] = [&FETCH, &TRANSCRIBE, &CALLBACKS];

/// How one pool of a process runs its queue.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Jobs run at the same time by this process.
    pub concurrency: usize,
    /// How long a claim holds its row without renewal; renewed every third of it.
    pub lease: Duration,
    /// Longest a step may run; past it the step is cancelled and counts as a failed attempt.
    pub max_step: Duration,
}
