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

pub type Wakeup = watch::Receiver<u64>;

pub struct NotificationHub {
    channels: HashMap<&'static str, watch::Sender<u64>>,
}

impl NotificationHub {
    /// Listens on `channels` with one connection, reconnecting as needed; stop by aborting the
    /// returned task.
    pub fn start(pool: PgPool, channels: &[&'static str]) -> (Self, JoinHandle<()>) {
        let senders: HashMap<&'static str, watch::Sender<u64>> =
            channels.iter().map(|c| (*c, watch::channel(0).0)).collect();
        let hub = Self {
            channels: senders.clone(),
        };
        let channels = channels.to_vec();
        let task = tokio::spawn(async move {
            loop {
                if let Err(err) = listen(&pool, &channels, &senders).await {
                    tracing::warn!(error = %err, "notifications interrupted; reconnecting");
                }
                // Whatever was notified meanwhile is unknown: wake everyone to look.
                for sender in senders.values() {
                    sender.send_modify(|n| *n += 1);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
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

async fn listen(
    pool: &PgPool,
    channels: &[&'static str],
    senders: &HashMap<&'static str, watch::Sender<u64>>,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen_all(channels.iter().copied()).await?;
    loop {
        let notification = listener.recv().await?;
        if let Some(sender) = senders.get(notification.channel()) {
            sender.send_modify(|n| *n += 1);
        }
    }
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
