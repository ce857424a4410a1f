//! Running a projection: one projector per projection across all instances (advisory lock),
//! woken by `NOTIFY` when events commit and polling as a fallback.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{PgConnection, PgPool};

use crate::event_log::{read_page, LogPosition, StoredEvent};
use crate::notifications::{wait_for, Wakeup};
use crate::parking::{self, Head};

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
    /// An event's sealed fields did not open with their key (altered data).
    #[error("event {global_position} cannot be opened")]
    Sealed {
        global_position: i64,
        #[source]
        source: callingest_privacy::SealError,
    },
    /// Keys that do not unwrap: the master key is wrong for every event alike.
    #[error("keyring")]
    Keyring(#[source] callingest_privacy::KeyringError),
    #[error("unknown projection {0}")]
    Unknown(String),
}

impl ProjectionError {
    /// Whether the failure comes from the events themselves (a payload that does not decode, a
    /// constraint or a trigger refusing the row, a value out of range), so parking the event
    /// lets the projection go on. Anything else (the connection, a deadlock, a timeout, a
    /// missing table) would fail any event: the page is retried as a whole instead.
    pub fn lies_in_the_data(&self) -> bool {
        match self {
            Self::Undecodable { .. } | Self::Sealed { .. } => true,
            Self::Database(sqlx::Error::Database(db)) => db.code().is_some_and(|code| {
                // 22: data exception, 23: integrity constraint violation, 54: program limit
                // exceeded (an index row too big, ...), P0: raised by PL/pgSQL (a trigger's
                // `raise exception`).
                ["22", "23", "54", "P0"]
                    .iter()
                    .any(|class| code.starts_with(class))
            }),
            // Read-model rows that do not (de)serialise.
            Self::Database(sqlx::Error::Decode(_) | sqlx::Error::Encode(_)) => true,
            Self::Database(sqlx::Error::ColumnDecode { .. }) => true,
            Self::Database(_) | Self::Keyring(_) | Self::Unknown(_) => false,
        }
    }

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

    /// Applies one page; returns how many events it read (0: caught up). Events the projection
    /// cannot apply are parked (see [`crate::parking`]) rather than failing the page.
    pub async fn step(&self) -> Result<usize, ProjectionError> {
        self.step_reading_ahead(None, false)
            .await
            .map(|(read, _)| read)
    }

    /// [`Self::step`], taking its page from `ahead` when that was read from the checkpoint,
    /// and with `read_next` starting to read the following page while this one is applied.
    async fn step_reading_ahead(
        &self,
        ahead: Option<ReadAhead>,
        read_next: bool,
    ) -> Result<(usize, Option<ReadAhead>), ProjectionError> {
        match self.step_as(Attempt::Whole, ahead, read_next).await {
            // Somewhere in the page is an event that cannot be applied: read the page again in
            // a fresh transaction and find it.
            Err(err) if err.lies_in_the_data() => self.step_as(Attempt::Bisect, None, false).await,
            outcome => outcome,
        }
    }

    async fn step_as(
        &self,
        how: Attempt,
        ahead: Option<ReadAhead>,
        read_next: bool,
    ) -> Result<(usize, Option<ReadAhead>), ProjectionError> {
        let name = self.projection.name();
        let mut tx = self.pool.begin().await?;
        // Locking the checkpoint row serialises pages with a concurrent `reset` or `retry`.
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
        let checkpoint = LogPosition {
            tx_id,
            global_position,
        };
        let read_ahead = match ahead {
            Some(ahead) => ahead.page_from(checkpoint).await,
            None => None,
        };
        let events = match read_ahead {
            Some(events) => events,
            None => read_page(&mut tx, checkpoint, PAGE_SIZE).await?,
        };
        let Some(last) = events.last().map(StoredEvent::position) else {
            tx.rollback().await?;
            return Ok((0, None));
        };
        // A short page ended at what was readable: nothing to read ahead.
        let full = events.len() as i64 == PAGE_SIZE;
        let next = (read_next && full).then(|| ReadAhead::start(&self.pool, last));
        let parked = self.apply_or_park(&mut tx, &events, how).await?;
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
        report_parked(name, &parked);
        Ok((events.len(), next))
    }

    /// Applies a page, skipping what must wait behind a parked event and, when bisecting,
    /// parking what fails.
    ///
    /// [`Attempt::Whole`] is the fast path: the page in one go, no savepoint; any failure fails
    /// the transaction. [`Attempt::Bisect`] attempts the page inside a savepoint and, when that
    /// fails for a reason that lies in the data, each half in log order, failing halves split
    /// again, until the events that fail alone are found (about 2·log₂(page) attempts per
    /// culprit rather than one per event). A single event that fails is parked, and so is every
    /// later event of its aggregate, held behind it.
    async fn apply_or_park(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
        how: Attempt,
    ) -> Result<Vec<Parked>, ProjectionError> {
        let name = self.projection.name();
        let mut heads = parking::parked_aggregates(conn, name).await?;
        let mut parked = Vec::new();
        // Ranges still to attempt; the last one is the earliest in the log.
        let mut pending: Vec<Range<usize>> = Vec::new();
        pending.push(0..events.len());
        while let Some(range) = pending.pop() {
            let slice = &events[range.clone()];
            let mut held = Vec::new();
            // Only copied when it holds events of a parked aggregate: the common page is applied
            // as read.
            let owned: Vec<StoredEvent>;
            let to_apply = if heads.is_empty() || !slice.iter().any(|e| heads.get(e).is_some()) {
                slice
            } else {
                let mut kept = Vec::with_capacity(slice.len());
                for event in slice {
                    match heads.get(event) {
                        Some(head) => held.push((event, head.clone())),
                        None => kept.push(event.clone()),
                    }
                }
                owned = kept;
                &owned
            };
            if how == Attempt::Whole {
                for (event, head) in &held {
                    parking::park(conn, name, event, Some(head.global_position), &head.error)
                        .await?;
                }
                if !to_apply.is_empty() {
                    self.projection.apply_page(conn, to_apply).await?;
                }
                parked.extend(held.into_iter().map(|(event, head)| Parked {
                    event: event.clone(),
                    held_behind: Some(head.global_position),
                    error: head.error,
                }));
                continue;
            }
            match self.attempt(conn, to_apply, &held).await? {
                Ok(()) => parked.extend(held.into_iter().map(|(event, head)| Parked {
                    event: event.clone(),
                    held_behind: Some(head.global_position),
                    error: head.error,
                })),
                Err(err) if to_apply.len() == 1 => {
                    let event = &to_apply[0];
                    let error = parking::error_text(&err);
                    // The held events of this attempt were rolled back with it: record them
                    // again, with the failure they wait behind.
                    for (held_event, head) in &held {
                        parking::park(
                            conn,
                            name,
                            held_event,
                            Some(head.global_position),
                            &head.error,
                        )
                        .await?;
                    }
                    parking::park(conn, name, event, None, &error).await?;
                    parked.extend(held.into_iter().map(|(event, head)| Parked {
                        event: event.clone(),
                        held_behind: Some(head.global_position),
                        error: head.error,
                    }));
                    heads.insert(
                        event,
                        Head {
                            global_position: event.global_position,
                            error: error.clone(),
                        },
                    );
                    parked.push(Parked {
                        event: event.clone(),
                        held_behind: None,
                        error,
                    });
                }
                Err(_) => {
                    let middle = range.start + range.len() / 2;
                    pending.push(middle..range.end);
                    pending.push(range.start..middle);
                }
            }
        }
        Ok(parked)
    }

    /// One attempt inside a savepoint: records `held` as parked and applies `events`. On a
    /// failure that lies in the data, everything the attempt did is rolled back and the error
    /// is the inner `Err`; any other failure (the connection, a deadlock, ...) fails the page.
    async fn attempt(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
        held: &[(&StoredEvent, Head)],
    ) -> Result<Result<(), ProjectionError>, ProjectionError> {
        let name = self.projection.name();
        sqlx::query("savepoint projection_attempt")
            .execute(&mut *conn)
            .await?;
        let mut outcome = Ok(());
        for (event, head) in held {
            parking::park(conn, name, event, Some(head.global_position), &head.error).await?;
        }
        if !events.is_empty() {
            outcome = self.projection.apply_page(conn, events).await;
        }
        match outcome {
            Ok(()) => {
                sqlx::query("release savepoint projection_attempt")
                    .execute(&mut *conn)
                    .await?;
                Ok(Ok(()))
            }
            Err(err) => {
                sqlx::query("rollback to savepoint projection_attempt")
                    .execute(&mut *conn)
                    .await?;
                sqlx::query("release savepoint projection_attempt")
                    .execute(&mut *conn)
                    .await?;
                if err.lies_in_the_data() {
                    Ok(Err(err))
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Applies `projection`'s parked events again, each aggregate's in log order, in one
    /// transaction serialised with the projector on the checkpoint row. Rows of events that now
    /// apply are removed; at an aggregate's first event that still fails, it and the events
    /// after it stay parked (with the new error).
    pub async fn retry(&self) -> Result<RetryOutcome, ProjectionError> {
        let name = self.projection.name();
        let mut tx = self.pool.begin().await?;
        lock_checkpoint(&mut tx, name).await?;
        let mut outcome = RetryOutcome::default();
        for aggregate in parking::parked_events_by_aggregate(&mut tx, name).await? {
            let mut events = aggregate.iter();
            while let Some(event) = events.next() {
                match self
                    .attempt(&mut tx, std::slice::from_ref(event), &[])
                    .await?
                {
                    Ok(()) => {
                        parking::unpark(&mut tx, name, event.global_position).await?;
                        outcome.applied += 1;
                    }
                    Err(err) => {
                        let error = parking::error_text(&err);
                        parking::park(&mut tx, name, event, None, &error).await?;
                        outcome.still_parked += 1;
                        for later in events.by_ref() {
                            parking::park(
                                &mut tx,
                                name,
                                later,
                                Some(event.global_position),
                                &error,
                            )
                            .await?;
                            outcome.still_parked += 1;
                        }
                        tracing::warn!(
                            projection = name,
                            global_position = event.global_position,
                            aggregate_type = %event.aggregate_type,
                            aggregate_id = %event.aggregate_id,
                            event_type = %event.event_type,
                            error = %error,
                            "parked event still fails; it stays parked"
                        );
                    }
                }
            }
        }
        tx.commit().await?;
        Ok(outcome)
    }

    /// Applies pages until the log has nothing more that can be read; returns the event count.
    /// After a full page the next one is read on another connection while the current one is
    /// applied, so a replay keeps PostgreSQL and this process busy at once.
    pub async fn catch_up(&self) -> Result<usize, ProjectionError> {
        let mut total = 0;
        let mut ahead = None;
        loop {
            match self.step_reading_ahead(ahead.take(), true).await? {
                (0, _) => return Ok(total),
                (n, next) => {
                    total += n;
                    ahead = next;
                }
            }
        }
    }

    /// Empties the projection's tables and parked events and rewinds its checkpoint, in one
    /// transaction. A running projector then replays from the start (parking again what still
    /// fails); `catch_up` does it here.
    pub async fn reset(&self) -> Result<(), ProjectionError> {
        let name = self.projection.name();
        let mut tx = self.pool.begin().await?;
        lock_checkpoint(&mut tx, name).await?;
        // What was parked is replayed with the rest, and parked again if it still fails.
        parking::clear(&mut tx, name).await?;
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

/// Creates the projection's checkpoint row if needed and locks it for this transaction: pages,
/// resets and retries of one projection never interleave.
async fn lock_checkpoint(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("insert into projection_checkpoint (name) values ($1) on conflict do nothing")
        .bind(name)
        .execute(&mut *conn)
        .await?;
    sqlx::query("select 1 from projection_checkpoint where name = $1 for update")
        .bind(name)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The page after a position, read on its own connection while the page before it is applied.
///
/// A page read ahead is the page a later read would start with: it holds only events of
/// transactions that had ended (below the oldest running one), and any event that becomes
/// readable afterwards belongs to a later transaction and so sorts after all of them.
struct ReadAhead {
    after: LogPosition,
    page: tokio::task::JoinHandle<Result<Vec<StoredEvent>, sqlx::Error>>,
}

impl ReadAhead {
    fn start(pool: &PgPool, after: LogPosition) -> Self {
        let pool = pool.clone();
        let page = tokio::spawn(async move {
            let mut conn = pool.acquire().await?;
            read_page(&mut conn, after, PAGE_SIZE).await
        });
        Self { after, page }
    }

    /// The page, when it was read from `checkpoint` and holds events. Otherwise (the
    /// checkpoint moved, the read failed, or it found nothing yet) the caller reads afresh.
    async fn page_from(self, checkpoint: LogPosition) -> Option<Vec<StoredEvent>> {
        if self.after != checkpoint {
            return None;
        }
        match self.page.await {
            Ok(Ok(events)) if !events.is_empty() => Some(events),
            _ => None,
        }
    }
}

/// How a page is applied: whole (the fast path), or bisected to find what fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    Whole,
    Bisect,
}

/// An event a page parked: failed (`held_behind` `None`) or held behind a failed one.
struct Parked {
    event: StoredEvent,
    held_behind: Option<i64>,
    error: String,
}

/// Logs what a committed page parked and counts the failures.
fn report_parked(projection: &'static str, parked: &[Parked]) {
    let mut failures = 0;
    for Parked {
        event,
        held_behind,
        error,
    } in parked
    {
        match held_behind {
            None => {
                failures += 1;
                tracing::error!(
                    projection,
                    global_position = event.global_position,
                    aggregate_type = %event.aggregate_type,
                    aggregate_id = %event.aggregate_id,
                    event_type = %event.event_type,
                    error = %error,
                    "event parked: the projection cannot apply it and goes on without it"
                );
            }
            Some(behind) => tracing::warn!(
                projection,
                global_position = event.global_position,
                aggregate_type = %event.aggregate_type,
                aggregate_id = %event.aggregate_id,
                event_type = %event.event_type,
                held_behind = behind,
                "event held behind a parked event of its aggregate"
            ),
        }
    }
    if failures > 0 {
        metrics::counter!("callingest_projection_failures_total", "projection" => projection)
            .increment(failures);
    }
}

/// What a retry did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RetryOutcome {
    /// Parked events that applied and were removed from `projection_failure`.
    pub applied: u64,
    /// Events still parked (failed again, or held behind one that did).
    pub still_parked: u64,
}
