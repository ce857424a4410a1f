//! Running commands against event-sourced aggregates stored by postgres-es.

use std::collections::HashMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, AggregateContext, AggregateError, EventStore};
use postgres_es::PostgresEventRepository;
use sqlx::PgPool;

/// How often one command is retried after losing a race; each retry reloads the aggregate.
const MAX_CONFLICT_RETRIES: usize = 10;

pub type Store<A> = PersistedEventStore<PostgresEventRepository, A>;

pub fn store<A: Aggregate>(pool: PgPool) -> Store<A> {
    PersistedEventStore::new_event_store(PostgresEventRepository::new(pool))
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
