//! One `LISTEN` connection per process, fanned out to every task that waits for a channel.
//!
//! A `PgListener` holds a pooled connection for good; one per worker, sender and projector
//! would starve the pool the API needs. Subscribers get a `watch` receiver whose value
//! changes on each notification, so a notification that arrives while a task is busy is not
//! lost: its next `changed()` returns at once.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_retry::strategy::{jitter, ExponentialBackoff};

pub type Wakeup = watch::Receiver<u64>;

pub struct NotificationHub {
    channels: HashMap<&'static str, watch::Sender<u64>>,
}

impl NotificationHub {
    /// Listens on `channels` with one connection, reconnecting as needed (see
    /// [`reconnect_backoff`]); stop by aborting the returned task.
    pub fn start(pool: PgPool, channels: &[&'static str]) -> (Self, JoinHandle<()>) {
        let senders: HashMap<&'static str, watch::Sender<u64>> =
            channels.iter().map(|c| (*c, watch::channel(0).0)).collect();
        let hub = Self {
            channels: senders.clone(),
        };
        let channels = channels.to_vec();
        let task = tokio::spawn(async move {
            let mut backoff = reconnect_backoff();
            loop {
                let err = listen(&pool, &channels, &senders, &mut backoff).await;
                // Whatever was notified meanwhile is unknown: wake everyone to look.
                for sender in senders.values() {
                    sender.send_modify(|n| *n += 1);
                }
                let wait = backoff.next().unwrap_or(RECONNECT_MAX_WAIT);
                tracing::warn!(error = %err, retry_in_ms = wait.as_millis() as u64, "notifications interrupted; reconnecting");
                tokio::time::sleep(wait).await;
            }
        });
        (hub, task)
    }

    /// A receiver for `channel`, which must be one the hub was started with.
    pub fn subscribe(&self, channel: &str) -> Wakeup {
        self.channels
            .get(channel)
            .unwrap_or_else(|| panic!("the hub does not listen on {channel}"))
            .subscribe()
    }
}

/// Listens until the connection fails; a connection that got as far as listening resets
/// `backoff`, so the next outage starts again from the shortest wait.
async fn listen(
    pool: &PgPool,
    channels: &[&'static str],
    senders: &HashMap<&'static str, watch::Sender<u64>>,
    backoff: &mut Backoff,
) -> sqlx::Error {
    let mut listener = match PgListener::connect_with(pool).await {
        Ok(listener) => listener,
        Err(err) => return err,
    };
    if let Err(err) = listener.listen_all(channels.iter().copied()).await {
        return err;
    }
    *backoff = reconnect_backoff();
    loop {
        match listener.recv().await {
            Ok(notification) => {
                if let Some(sender) = senders.get(notification.channel()) {
                    sender.send_modify(|n| *n += 1);
                }
            }
            Err(err) => return err,
        }
    }
}

/// First wait before reconnecting the `LISTEN` connection; it doubles up to
/// [`RECONNECT_MAX_WAIT`].
const RECONNECT_FIRST_WAIT: Duration = Duration::from_millis(100);
/// Longest wait before reconnecting (before jitter). Meanwhile every subscriber still polls on
/// its own timer, so nothing waits for the connection: it only makes wake-ups prompt again.
const RECONNECT_MAX_WAIT: Duration = Duration::from_secs(10);

type Backoff = Box<dyn Iterator<Item = Duration> + Send>;

/// Waits between reconnection attempts: 100 ms doubling to 10 s, each between half and all of
/// that (jitter, so the instances of a fleet do not reconnect in step after a database restart).
pub fn reconnect_backoff() -> Backoff {
    Box::new(
        ExponentialBackoff::from_millis(2)
            .factor(RECONNECT_FIRST_WAIT.as_millis() as u64 / 2)
            .max_delay(RECONNECT_MAX_WAIT)
            .map(|wait| wait / 2 + jitter(wait / 2)),
    )
}

/// Waits until `wakeup` changes or `timeout` passes, whichever is first; returns whether it
/// was woken.
pub async fn wait_for(wakeup: &mut Wakeup, timeout: Duration) -> bool {
    match tokio::time::timeout(timeout, wakeup.changed()).await {
        Ok(Ok(())) => true,
        // The hub is gone (shutting down): behave as a plain timer.
        Ok(Err(_)) => {
            tokio::time::sleep(timeout).await;
            false
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnection_waits_grow_with_jitter_and_stay_capped() {
        let waits: Vec<Duration> = reconnect_backoff().take(12).collect();
        for (n, wait) in waits.iter().enumerate() {
            let full = (RECONNECT_FIRST_WAIT * 2u32.pow(n as u32)).min(RECONNECT_MAX_WAIT);
            assert!(
                *wait >= full / 2 && *wait <= full,
                "wait {n}: {wait:?} not within [{:?}, {full:?}]",
                full / 2
            );
        }
        assert!(waits[11] >= RECONNECT_MAX_WAIT / 2);
    }
}
