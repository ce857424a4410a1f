//! How a worker records a step on a call: the command runs on the `Call` aggregate with the
//! worker named in the events' metadata, and a refusal is an answer, not an error (the call
//! moved on meanwhile, e.g. another worker finished it).

use std::collections::HashMap;

use callingest_domain::call::{Call, CallCommand, CallError, CallEvent};
use cqrs_es::AggregateError;

use crate::event_store::{execute, Store};

/// Whether the call took a command, or refused it given its state (e.g. already finished).
pub enum Recorded {
    /// The events the command recorded.
    Applied(Vec<CallEvent>),
    Refused(CallError),
}

impl Recorded {
    /// Whether the step ended processing (the call completed or failed).
    pub fn finished_the_call(&self) -> bool {
        matches!(self, Recorded::Applied(events) if events.iter().any(|e| matches!(
            e,
            CallEvent::ProcessingCompleted(_) | CallEvent::ProcessingFailed(_)
        )))
    }
}

pub async fn record_step(
    calls: &Store<Call>,
    call_aggregate_id: &str,
    command: CallCommand,
    worker: &str,
) -> Result<Recorded, AggregateError<CallError>> {
    let metadata = HashMap::from([("worker".to_owned(), worker.to_owned())]);
    match execute(calls, call_aggregate_id, command, &metadata).await {
        Ok(events) => Ok(Recorded::Applied(events)),
        Err(AggregateError::UserError(refusal)) => Ok(Recorded::Refused(refusal)),
        Err(other) => Err(other),
    }
}
