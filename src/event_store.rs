//! Running commands against event-sourced aggregates stored by postgres-es, through a
//! repository that seals personal fields on the way in and opens them on the way out.

use std::collections::HashMap;

use callingest_domain::call::{Call, CallEvent};
use callingest_privacy::{keyring, seal, Privacy};
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{
    PersistedEventRepository, PersistedEventStore, PersistenceError, ReplayStream, SerializedEvent,
    SerializedSnapshot,
};
use cqrs_es::{Aggregate, AggregateContext, AggregateError, EventStore};
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlx::PgPool;

/// How often one command is retried after losing a race; each retry reloads the aggregate.
const MAX_CONFLICT_RETRIES: usize = 10;

pub type Store<A> = PersistedEventStore<SealingRepository, A>;

pub fn store<A: Aggregate>(pool: PgPool, privacy: &Privacy) -> Store<A> {
    PersistedEventStore::new_event_store(SealingRepository {
        inner: PostgresEventRepository::new(pool.clone()),
        pool,
        privacy: privacy.clone(),
    })
}

/// postgres-es' repository with the call events' personal fields sealed (see
/// [`callingest_privacy::seal`]). Upcasters cannot do this: they are synchronous and cannot
/// fetch keys. Only `Call` events hold personal data; other aggregates pass through.
pub struct SealingRepository {
    inner: PostgresEventRepository,
    pool: PgPool,
    privacy: Privacy,
}

fn store_err(e: impl std::error::Error + Send + Sync + 'static) -> PersistenceError {
    PersistenceError::UnknownError(Box::new(e))
}

fn decode(e: serde_json::Error) -> PersistenceError {
    PersistenceError::DeserializationError(Box::new(e))
}

impl SealingRepository {
    async fn open(
        &self,
        mut events: Vec<SerializedEvent>,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let sealed = |e: &SerializedEvent| {
            e.aggregate_type == Call::TYPE
                && matches!(e.event_type.as_str(), "CallAccepted" | "TranscriptProduced")
        };
        let mut ids: Vec<String> = events
            .iter()
            .filter(|e| sealed(e))
            .map(|e| e.aggregate_id.clone())
            .collect();
        if ids.is_empty() {
            return Ok(events);
        }
        ids.dedup();
        let keys = keyring::load(&self.pool, &self.privacy, &ids)
            .await
            .map_err(store_err)?;
        for e in events.iter_mut().filter(|e| sealed(e)) {
            let event: CallEvent =
                serde_json::from_value(std::mem::take(&mut e.payload)).map_err(decode)?;
            let opened = seal::open_event(
                &self.privacy,
                &e.aggregate_id,
                event,
                keys.get(&e.aggregate_id),
            )
            .map_err(store_err)?;
            e.payload = serde_json::to_value(opened).map_err(decode)?;
        }
        Ok(events)
    }

    async fn seal(
        &self,
        events: &[SerializedEvent],
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let mut stored = events.to_vec();
        for e in stored.iter_mut().filter(|e| {
            e.aggregate_type == Call::TYPE
                && matches!(e.event_type.as_str(), "CallAccepted" | "TranscriptProduced")
        }) {
            let event: CallEvent = serde_json::from_value(e.payload.clone()).map_err(decode)?;
            let keys = match &event {
                CallEvent::CallAccepted(accepted) => {
                    keyring::refresh_writing_version(&self.pool, &self.privacy)
                        .await
                        .map_err(store_err)?;
                    let (keys, row) = self.privacy.new_key_row(
                        accepted.partner_id.as_str(),
                        &e.aggregate_id,
                        &accepted.call,
                    );
                    let mut conn = self.pool.acquire().await.map_err(store_err)?;
                    keyring::ensure_row(&mut conn, &self.privacy, keys, &row)
                        .await
                        .map_err(store_err)?
                }
                _ => keyring::load(
                    &self.pool,
                    &self.privacy,
                    std::slice::from_ref(&e.aggregate_id),
                )
                .await
                .map_err(store_err)?
                .remove(&e.aggregate_id)
                .unwrap_or_default(),
            };
            let sealed = seal::seal_event(&self.privacy, &e.aggregate_id, &event, &keys)
                .map_err(store_err)?;
            e.payload = serde_json::to_value(sealed.as_ref()).map_err(decode)?;
        }
        Ok(stored)
    }
}

impl PersistedEventRepository for SealingRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.open(self.inner.get_events::<A>(aggregate_id).await?)
            .await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.open(
            self.inner
                .get_last_events::<A>(aggregate_id, last_sequence)
                .await?,
        )
        .await
    }

    /// The stores are event-sourced only (no snapshots, which would hold clear text).
    async fn get_snapshot<A: Aggregate>(
        &self,
        _aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        Ok(None)
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        if snapshot_update.is_some() {
            return Err(PersistenceError::UnknownError(
                "snapshots are not supported: they would hold personal data in clear".into(),
            ));
        }
        let stored = self.seal(events).await?;
        self.inner.persist::<A>(&stored, None).await
    }

    /// Not used by the service; refused rather than handing out sealed events unopened.
    async fn stream_events<A: Aggregate>(
        &self,
        _aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        Err(PersistenceError::UnknownError(
            "streaming events is not supported: read them with get_events".into(),
        ))
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        Err(PersistenceError::UnknownError(
            "streaming events is not supported: read the log with the projector".into(),
        ))
    }
}

/// Runs `command` on an aggregate already loaded (`context`) and commits its events. A
/// concurrent append shows as `AggregateConflict`; [`execute`] then reloads and retries.
pub async fn commit_on<A>(
    store: &Store<A>,
    mut context: <Store<A> as EventStore<A>>::AC,
    command: A::Command,
    metadata: &HashMap<String, String>,
) -> Result<Vec<A::Event>, AggregateError<A::Error>>
where
    A: Aggregate<Services = ()>,
{
    let sink = EventSink::default();
    context
        .aggregate()
        .handle(command, &(), &sink)
        .await
        .map_err(AggregateError::UserError)?;
    let events = sink.collect().await;
    store
        .commit(events.clone(), context, metadata.clone())
        .await?;
    Ok(events)
}

/// `CqrsFramework::execute`, but returning the events it committed (callers report them) and
/// retrying `AggregateConflict` by reloading, so a lost race is never an error.
pub async fn execute<A>(
    store: &Store<A>,
    aggregate_id: &str,
    command: A::Command,
    metadata: &HashMap<String, String>,
) -> Result<Vec<A::Event>, AggregateError<A::Error>>
where
    A: Aggregate<Services = ()>,
    A::Command: Clone,
{
    let mut conflicts = 0;
    loop {
        let context = store.load_aggregate(aggregate_id).await?;
        match commit_on(store, context, command.clone(), metadata).await {
            Err(AggregateError::AggregateConflict) if conflicts < MAX_CONFLICT_RETRIES => {
                conflicts += 1
            }
            other => return other,
        }
    }
}
