//! The fallback path: one cqrs-es command per call through postgres-es, each reloading its
//! aggregate and retrying when a concurrent writer appended first.

use std::collections::HashMap;

use callingest_domain::batch::{Batch, BatchCommand};
use callingest_domain::call::{call_aggregate_id, AcceptCall, Call, CallCommand, CallEvent};
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, AggregateContext, AggregateError, EventStore};
use postgres_es::PostgresEventRepository;
use sqlx::PgPool;
use uuid::Uuid;

use super::{commands, CallOutcome, IngestError, Receipt, Submission};

/// How often one command is retried after losing a race; each retry reloads the aggregate.
const MAX_CONFLICT_RETRIES: usize = 10;

pub struct CallByCall {
    calls: PersistedEventStore<PostgresEventRepository, Call>,
    batches: PersistedEventStore<PostgresEventRepository, Batch>,
}

impl CallByCall {
    pub fn new(pool: PgPool) -> Self {
        Self {
            calls: PersistedEventStore::new_event_store(PostgresEventRepository::new(pool.clone())),
            batches: PersistedEventStore::new_event_store(PostgresEventRepository::new(pool)),
        }
    }

    pub async fn append(&self, batch_id: Uuid, s: &Submission) -> Result<Receipt, IngestError> {
        let metadata = s.request.event_metadata();
        let mut outcomes = Vec::with_capacity(s.calls.len());
        for cmd in commands::accept_calls(batch_id, s) {
            let call_id = cmd.call.call.id.clone();
            let events = self.accept_call(cmd, &metadata).await?;
            let outcome = match events.first() {
                Some(CallEvent::CallAccepted(_)) => CallOutcome::Accepted,
                _ => CallOutcome::Duplicate,
            };
            outcomes.push((call_id, outcome));
        }
        let submit = BatchCommand::SubmitBatch(commands::submit_batch(batch_id, s));
        execute(&self.batches, &batch_id.to_string(), submit, &metadata).await?;
        Ok(Receipt {
            batch_id,
            calls: outcomes,
        })
    }

    async fn accept_call(
        &self,
        cmd: AcceptCall,
        metadata: &HashMap<String, String>,
    ) -> Result<Vec<CallEvent>, IngestError> {
        let id = call_aggregate_id(&cmd.partner_id, &cmd.call.call.id);
        execute(&self.calls, &id, CallCommand::AcceptCall(cmd), metadata).await
    }
}

/// `CqrsFramework::execute`, but returning the events it committed (the caller reports them)
/// and retrying `AggregateConflict` by reloading.
async fn execute<A>(
    store: &PersistedEventStore<PostgresEventRepository, A>,
    aggregate_id: &str,
    command: A::Command,
    metadata: &HashMap<String, String>,
) -> Result<Vec<A::Event>, IngestError>
where
    A: Aggregate<Services = ()>,
    A::Command: Clone,
    A::Error: Send + Sync + 'static,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = async {
            let mut context = store.load_aggregate(aggregate_id).await?;
            let sink = EventSink::default();
            context
                .aggregate()
                .handle(command.clone(), &(), &sink)
                .await
                .map_err(AggregateError::UserError)?;
            let events = sink.collect().await;
            store
                .commit(events.clone(), context, metadata.clone())
                .await?;
            Ok::<_, AggregateError<A::Error>>(events)
        }
        .await;
        match result {
            Ok(events) => return Ok(events),
            Err(AggregateError::AggregateConflict) if attempt <= MAX_CONFLICT_RETRIES => continue,
            Err(AggregateError::DatabaseConnectionError(e)) => {
                return Err(IngestError::Unavailable(e))
            }
            Err(other) => return Err(IngestError::Store(Box::new(other))),
        }
    }
}
