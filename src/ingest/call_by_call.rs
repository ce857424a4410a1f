//! The fallback path: one cqrs-es command per call through postgres-es, each reloading its
//! aggregate and retrying when a concurrent writer appended first.

use std::collections::HashMap;

use callingest_domain::batch::{Batch, BatchCommand};
use callingest_domain::call::{call_aggregate_id, Call, CallCommand, CallEvent};
use cqrs_es::AggregateError;
use sqlx::PgPool;
use uuid::Uuid;

use super::{commands, CallOutcome, IngestError, Receipt, Submission};
use crate::event_store::{self, execute, Store};

pub struct CallByCall {
    calls: Store<Call>,
    batches: Store<Batch>,
}

impl CallByCall {
    pub fn new(pool: PgPool, privacy: &callingest_privacy::Privacy) -> Self {
        Self {
            calls: event_store::store(pool.clone(), privacy),
            batches: event_store::store(pool, privacy),
        }
    }

    pub async fn append(&self, batch_id: Uuid, s: &Submission) -> Result<Receipt, IngestError> {
        let metadata: HashMap<String, String> = s.request.event_metadata();
        let mut outcomes = Vec::with_capacity(s.calls.len());
        for cmd in commands::accept_calls(batch_id, s) {
            let call_id = cmd.call.call.id.clone();
            let id = call_aggregate_id(&cmd.partner_id, &call_id);
            let events = execute(
                &self.calls,
                &id,
                CallCommand::AcceptCall(Box::new(cmd)),
                &metadata,
            )
            .await
            .map_err(store_error)?;
            let outcome = match events.first() {
                Some(CallEvent::CallAccepted(_)) => CallOutcome::Accepted,
                _ => CallOutcome::Duplicate,
            };
            outcomes.push((call_id, outcome));
        }
        let submit = BatchCommand::SubmitBatch(commands::submit_batch(batch_id, s));
        execute(&self.batches, &batch_id.to_string(), submit, &metadata)
            .await
            .map_err(store_error)?;
        Ok(Receipt {
            batch_id,
            calls: outcomes,
        })
    }
}

fn store_error<E: std::error::Error + Send + Sync + 'static>(
    err: AggregateError<E>,
) -> IngestError {
    match err {
        AggregateError::DatabaseConnectionError(e) => IngestError::Unavailable(e),
        // postgres-es reports a query cut by the server going away as an unexpected error: the
        // database error inside decides.
        other => IngestError::classify(other),
    }
}
