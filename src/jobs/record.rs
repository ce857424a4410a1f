//! Recording a step's outcome on its call, only while the claim still holds the row.
//!
//! The call is loaded first, outside any transaction; then one transaction locks the queue row
//! where it carries the claim's token and inserts the events. The transaction's id is thus
//! taken after the load, as the event log reader requires (DESIGN.md), and a claim that lost
//! its row records nothing. A concurrent append to the call (the primary key on its sequence
//! is the optimistic lock) is retried by reloading, as cqrs-es would.

use std::collections::HashMap;

use callingest_domain::call::{Call, CallCommand, CallError, CallEvent};
use callingest_privacy::{keyring, seal, CallKeys, Privacy};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent, EventStore};
use sqlx::PgPool;

use super::{Claim, JobError, Queue};
use crate::event_store::{self, Store};

/// How often one outcome is retried after losing a race on the call's sequence.
const MAX_CONFLICT_RETRIES: usize = 10;

/// Whether the call took a command, or refused it given its state (e.g. already finished).
#[derive(Debug)]
pub enum Recorded {
    /// The events the command recorded (none when there was nothing to record).
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

pub(super) struct Recorder {
    pool: PgPool,
    calls: Store<Call>,
    privacy: Privacy,
}

impl Recorder {
    pub fn new(pool: PgPool, privacy: &Privacy) -> Self {
        Self {
            calls: event_store::store(pool.clone(), privacy),
            pool,
            privacy: privacy.clone(),
        }
    }

    /// Runs the command `decide` picks for the call's current state (none: nothing to record)
    /// and appends its events if `claim` still holds its row of `queue`. The worker is named in
    /// the events' metadata.
    pub async fn record_with(
        &self,
        queue: &Queue,
        claim: &Claim,
        owner: &str,
        decide: impl Fn(&Call) -> Option<CallCommand>,
    ) -> Result<Recorded, JobError> {
        let id = claim.call_aggregate_id.as_str();
        let metadata = serde_json::to_value(HashMap::from([("worker", owner)]))
            .map_err(|e| JobError::store(id, e))?;
        let mut conflicts = 0;
        loop {
            let context = self
                .calls
                .load_aggregate(id)
                .await
                .map_err(|e| JobError::store(id, e))?;
            let mut call = context.aggregate;
            let Some(command) = decide(&call) else {
                return Ok(Recorded::Applied(Vec::new()));
            };
            let sink = EventSink::default();
            if let Err(refusal) = call.handle(command, &(), &sink).await {
                return Ok(Recorded::Refused(refusal));
            }
            let events = sink.collect().await;
            match self
                .append(queue, claim, context.current_sequence, &events, &metadata)
                .await
            {
                Ok(()) => return Ok(Recorded::Applied(events)),
                Err(AppendError::Database(sqlx::Error::Database(e)))
                    if e.is_unique_violation() && conflicts < MAX_CONFLICT_RETRIES =>
                {
                    conflicts += 1;
                }
                Err(AppendError::LeaseLost) => {
                    return Err(JobError::LeaseLost {
                        call: id.to_owned(),
                    })
                }
                Err(e) => return Err(JobError::store(id, e)),
            }
        }
    }

    async fn append(
        &self,
        queue: &Queue,
        claim: &Claim,
        last_sequence: usize,
        events: &[CallEvent],
        metadata: &serde_json::Value,
    ) -> Result<(), AppendError> {
        if events.is_empty() {
            return Ok(());
        }
        // A transcript is sealed under the call's key, loaded before the transaction (which
        // must take its id only when it writes).
        let keys = if events
            .iter()
            .any(|e| matches!(e, CallEvent::TranscriptProduced(_)))
        {
            keyring::load(
                &self.pool,
                &self.privacy,
                std::slice::from_ref(&claim.call_aggregate_id),
            )
            .await
            .map_err(AppendError::Keyring)?
            .remove(&claim.call_aggregate_id)
            .unwrap_or_default()
        } else {
            CallKeys::default()
        };
        let mut tx = self.pool.begin().await?;
        // Locking the row keeps a new claim out until this commits (the claim skips locked
        // rows), so no other worker starts on the call from a state without these events.
        let held: Option<i32> = sqlx::query_scalar(&format!(
            "select 1 from {} where call_aggregate_id = $1 and lease_token = $2 for update",
            queue.table
        ))
        .bind(&claim.call_aggregate_id)
        .bind(claim.token)
        .fetch_optional(&mut *tx)
        .await?;
        if held.is_none() {
            return Err(AppendError::LeaseLost);
        }
        let mut sequences = Vec::with_capacity(events.len());
        let (mut types, mut versions, mut payloads) = (Vec::new(), Vec::new(), Vec::new());
        for (i, event) in events.iter().enumerate() {
            sequences.push((last_sequence + i + 1) as i64);
            types.push(event.event_type());
            versions.push(event.event_version());
            let stored = seal::seal_event(&self.privacy, &claim.call_aggregate_id, event, &keys)
                .map_err(AppendError::Seal)?;
            payloads.push(serde_json::to_string(&stored).map_err(AppendError::Serialize)?);
        }
        sqlx::query(
            "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             select $1, $2, t.sequence, t.event_type, t.event_version, t.payload::jsonb, $7
             from unnest($3::bigint[], $4::text[], $5::text[], $6::text[])
                  as t(sequence, event_type, event_version, payload)",
        )
        .bind(Call::TYPE)
        .bind(&claim.call_aggregate_id)
        .bind(&sequences)
        .bind(&types)
        .bind(&versions)
        .bind(&payloads)
        .bind(metadata)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
enum AppendError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("the claim no longer holds the row")]
    LeaseLost,
    #[error("could not serialise an event")]
    Serialize(#[source] serde_json::Error),
    #[error("could not seal an event")]
    Seal(#[source] callingest_privacy::SealError),
    #[error("could not load the call's keys")]
    Keyring(#[source] callingest_privacy::KeyringError),
}
