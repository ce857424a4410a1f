//! Running a projection: one projector per projection across all instances (advisory lock),
//! woken by `NOTIFY` when events commit and polling as a fallback.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{PgConnection, PgPool};

use crate::event_log::{read_page, LogPosition, StoredEvent};
use crate::notifications::{wait_for, Wakeup};

/// Events applied per transaction.
const PAGE_SIZE: i64 = 5_000;
/// How often the log is polled when no notification arrives.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// After a notification that found nothing readable yet: how often, and how soon, to look again.
const EAGER_RETRIES: u32 = 20;
const EAGER_RETRY_INTERVAL: Duration = Duration::from_millis(5);
/// Channel the events table notifies on commit (migration 0003).
pub const EVENTS_CHANNEL: &str = "callingest_events";

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("event {global_position} ({event_type}) cannot be read")]
    Undecodable {
        global_position: i64,
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("unknown projection {0}")]
    Unknown(String),
}

impl ProjectionError {
    pub fn undecodable(event: &StoredEvent, source: serde_json::Error) -> Self {
        Self::Undecodable {
            global_position: event.global_position,
            event_type: event.event_type.clone(),
            source,
        }
    }
}

/// A read model or queue kept from the event log. `apply_page` runs inside the transaction that
/// advances the checkpoint, so it must only write through `conn`.
#[async_trait::async_trait]
pub trait Projection: Send + Sync {
    fn name(&self) -> &'static str;

    /// Tables the projection owns; emptied on rebuild.
    fn tables(&self) -> &'static [&'static str];

    async fn apply_page(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), ProjectionError>;
}

pub struct Projector {
    pool: PgPool,
    projection: Arc<dyn Projection>,
}

impl Projector {
    pub fn new(pool: PgPool, projection: Arc<dyn Projection>) -> Self {
        Self { pool, projection }
    }

    /// Applies one page; returns how many events it applied (0: caught up).
    pub async fn step(&self) -> Result<usize, ProjectionError> {
        let name = self.projection.name();
        let mut tx = self.pool.begin().await?;
        // Locking the checkpoint row serialises pages with a concurrent `reset`.
        sqlx::query("insert into projection_checkpoint (name) values ($1) on conflict do nothing")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let (tx_id, global_position): (i64, i64) = sqlx::query_as(
            "select tx_id::text::bigint, global_position from projection_checkpoint
             where name = $1 for update",
        )
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
        let events = read_page(
            &mut tx,
            LogPosition {
                tx_id,
                global_position,
            },
            PAGE_SIZE,
        )
        .await?;
        let Some(last) = events.last().map(StoredEvent::position) else {
            tx.rollback().await?;
            return Ok(0);
        };
        self.projection.apply_page(&mut tx, &events).await?;
        sqlx::query(
            "update projection_checkpoint
             set tx_id = $2::text::xid8, global_position = $3, updated_at = now()
             where name = $1",
        )
        .bind(name)
        .bind(last.tx_id.to_string())
        .bind(last.global_position)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(events.len())
    }

    /// Applies pages until the log has nothing more that can be read; returns the event count.
    pub async fn catch_up(&self) -> Result<usize, ProjectionError> {
        let mut total = 0;
        loop {
            match self.step().await? {
                0 => return Ok(total),
                n => total += n,
            }
        }
    }

    /// Empties the projection's tables and rewinds its checkpoint, in one transaction. A running
    /// projector then replays from the start; `catch_up` does it here.
    pub async fn reset(&self) -> Result<(), ProjectionError> {
        let name = self.projection.name();
        let mut tx = self.pool.begin().await?;
        sqlx::query("insert into projection_checkpoint (name) values ($1) on conflict do nothing")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("select 1 from projection_checkpoint where name = $1 for update")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        for table in self.projection.tables() {
            sqlx::query(&format!("delete from {table}"))
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "update projection_checkpoint set tx_id = '0', global_position = 0, updated_at = now()
             where name = $1",
        )
        .bind(name)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Runs forever: waits for the projection's lock (another instance may hold it), then
    /// follows the log. Errors (a database restart, ...) are logged and the loop starts over.
    /// `wakeup` changes when events commit (see [`crate::notifications`]).
    pub async fn run(self, mut wakeup: Wakeup) {
        let name = self.projection.name();
        loop {
            if let Err(err) = self.follow(&mut wakeup).await {
                tracing::error!(projection = name, error = %err, "projector failed; restarting");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn follow(&self, wakeup: &mut Wakeup) -> Result<(), ProjectionError> {
        let name = self.projection.name();
        let mut lock = self.pool.acquire().await?;
        loop {
            let locked: bool = sqlx::query_scalar("select pg_try_advisory_lock(hashtext($1))")
                .bind(format!("callingest.projection.{name}"))
                .fetch_one(&mut *lock)
                .await?;
            if locked {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // The lock lives as long as this connection; detach it from the pool so it is never
        // handed to anyone else and is closed (releasing the lock) when this function ends.
        let _lock = lock.detach();
        tracing::info!(projection = name, "projector started");
        let mut eager_retries = 0;
        loop {
            let applied = self.catch_up().await?;
            if applied > 0 {
                tracing::debug!(projection = name, applied, "projected events");
            } else if eager_retries > 0 {
                // Just notified, yet nothing readable: the new events wait behind a
                // transaction still in flight somewhere in the cluster. Look again shortly
                // rather than a whole poll interval later.
                eager_retries -= 1;
                tokio::time::sleep(EAGER_RETRY_INTERVAL).await;
                continue;
            }
            eager_retries = 0;
            // Either a notification or the poll interval, whichever comes first.
            if wait_for(wakeup, POLL_INTERVAL).await {
                eager_retries = EAGER_RETRIES;
            }
        }
    }
}
