//! Runs the CPU-heavy part of ingest — validating a body of up to 5 MiB — on the blocking
//! thread pool, never on the threads that serve requests (so `/healthz` and everyone else's
//! requests stay fast), and bounds how many validations run at once: in all, and per partner
//! well below that, so one partner's bodies can never take every turn.
//!
//! A batch waits for its turn at most [`QUEUE_WAIT`]. Past it, a partner that already holds
//! all of its own turns is answered 429; a batch that waited for the global bound, 503.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::{timeout_at, Instant};

/// Longest a batch waits for its turn to be validated.
pub const QUEUE_WAIT: Duration = Duration::from_secs(2);

pub struct ValidationGate {
    global: Arc<Semaphore>,
    per_partner: usize,
    /// One entry per partner that sent a batch since start: bounded by the partners there are.
    partners: Mutex<HashMap<String, Arc<Semaphore>>>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum GateRefusal {
    /// This partner's own turns stayed taken for [`QUEUE_WAIT`].
    PartnerBusy,
    /// Every turn of the process stayed taken for [`QUEUE_WAIT`].
    Busy,
    /// The work panicked (a bug): the details are logged.
    Failed,
}

impl ValidationGate {
    pub fn new(global: usize, per_partner: usize) -> Self {
        Self {
            global: Arc::new(Semaphore::new(global.max(1))),
            per_partner: per_partner.max(1),
            partners: Mutex::new(HashMap::new()),
        }
    }

    fn partner_turns(&self, partner: &str) -> Arc<Semaphore> {
        let mut partners = self.partners.lock().unwrap_or_else(|e| e.into_inner());
        partners
            .entry(partner.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_partner)))
            .clone()
    }

    /// Runs `work` for `partner` on the blocking pool once it has a turn.
    pub async fn run<T, F>(&self, partner: &str, work: F) -> Result<T, GateRefusal>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let deadline = Instant::now() + QUEUE_WAIT;
        let partner_turn = timeout_at(deadline, self.partner_turns(partner).acquire_owned())
            .await
            .map_err(|_| GateRefusal::PartnerBusy)?
            .expect("the semaphore is never closed");
        let turn = timeout_at(deadline, self.global.clone().acquire_owned())
            .await
            .map_err(|_| GateRefusal::Busy)?
            .expect("the semaphore is never closed");
        // The turns go with the work: if the request is dropped meanwhile, they are still held
        // until the work really ends, so the bound is on CPU in use, not on requests waiting.
        tokio::task::spawn_blocking(move || {
            let _turns = (partner_turn, turn);
            work()
        })
        .await
        .map_err(|err| {
            tracing::error!(error = %err, "validation task failed");
            GateRefusal::Failed
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[tokio::test]
    async fn a_partner_holding_its_turns_waits_then_is_refused_while_others_go_on() {
        let gate = Arc::new(ValidationGate::new(2, 1));
        let (release, blocked) = mpsc::channel::<()>();
        let holder = {
            let gate = gate.clone();
            tokio::spawn(async move {
                gate.run("greedy", move || blocked.recv().unwrap())
                    .await
                    .unwrap()
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        assert_eq!(
            gate.run("greedy", || ()).await,
            Err(GateRefusal::PartnerBusy)
        );
        assert!(started.elapsed() >= QUEUE_WAIT);
        assert_eq!(gate.run("polite", || 7).await, Ok(7));
        release.send(()).unwrap();
        holder.await.unwrap();
        assert_eq!(gate.run("greedy", || 8).await, Ok(8));
    }
}
