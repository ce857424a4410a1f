//! Cooperative cancellation: of one job's step ([`Cancel`]) and of a whole process's pools
//! ([`Shutdown`]).

use std::sync::{Arc, OnceLock};

use callingest_audio::Stop;
use tokio_util::sync::CancellationToken;

/// Why a step was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// The lease expired by the local clock, or a renewal found the row claimed by another.
    LeaseLost,
    /// The step ran past its pool's maximum step duration: a failed attempt.
    TimedOut,
    /// The process drains and the grace period is over: the attempt is given back.
    Drained,
}

/// Asks one running step to stop. Async code awaits [`Cancel::cancelled`]; blocking code
/// (decoding, resampling, whisper) looks at [`Cancel::stop`] between blocks of work.
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    token: CancellationToken,
    stop: Stop,
    reason: Arc<OnceLock<CancelReason>>,
}

impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests the stop; the first reason given is the one that stays.
    pub fn cancel(&self, reason: CancelReason) {
        let _ = self.reason.set(reason);
        self.stop.request();
        self.token.cancel();
    }

    pub fn reason(&self) -> Option<CancelReason> {
        self.reason.get().copied()
    }

    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once the stop is requested.
    pub async fn cancelled(&self) {
        self.token.cancelled().await
    }

    /// The same request as a flag for blocking code.
    pub fn stop(&self) -> &Stop {
        &self.stop
    }
}

/// The drain of a process, shared by every pool: first no more claims, then (once the grace
/// period is over) the steps still running are interrupted.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    stop_claiming: CancellationToken,
    interrupt: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// No pool claims anything from now on; steps in flight go on.
    pub fn stop_claiming(&self) {
        self.stop_claiming.cancel();
    }

    /// Steps still in flight are cancelled ([`CancelReason::Drained`]).
    pub fn interrupt(&self) {
        self.stop_claiming.cancel();
        self.interrupt.cancel();
    }

    pub fn claiming_stopped(&self) -> bool {
        self.stop_claiming.is_cancelled()
    }

    pub async fn claiming_stops(&self) {
        self.stop_claiming.cancelled().await
    }

    pub async fn interrupted(&self) {
        self.interrupt.cancelled().await
    }
}
