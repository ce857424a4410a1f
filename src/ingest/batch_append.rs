//! The fast path: a batch's events appended in a single transaction.
//!
//! The calls' aggregates are loaded in one query (outside the transaction, so the appending
//! transaction's id is taken after the load, as the event log reader requires), each command
//! goes through the same `Aggregate::handle` cqrs-es would run, and all events are inserted with
//! one statement. The primary key `(aggregate_type, aggregate_id, sequence)` is the optimistic
//! lock: if any call was appended concurrently the whole transaction rolls back and the caller
//! falls back to the call-by-call path.
//!
//! Each new call's key row (its data keys and blind indexes) goes into the same transaction,
//! one multi-row insert for the batch, and its personal fields are sealed with the keys just
//! made: nothing is read back.

use std::borrow::Cow;
use std::collections::HashMap;

use callingest_domain::batch::{Batch, BatchCommand};
use callingest_domain::call::{call_aggregate_id, Call, CallCommand, CallEvent};
use callingest_privacy::{keyring, seal, CallKeyRow, Privacy};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use sqlx::PgPool;
use uuid::Uuid;

use super::{commands, CallOutcome, IngestError, Receipt, Submission};

/// Rows for one multi-row insert, column by column (bound as arrays and `unnest`ed).
#[derive(Default)]
struct EventRows {
    aggregate_type: Vec<&'static str>,
    aggregate_id: Vec<String>,
    sequence: Vec<i64>,
    event_type: Vec<String>,
    event_version: Vec<String>,
    payload: Vec<String>,
}

impl EventRows {
    fn push<A: Aggregate>(
        &mut self,
        aggregate_id: &str,
        sequence: i64,
        event: &A::Event,
    ) -> Result<(), IngestError> {
        let payload = serde_json::to_string(event).map_err(|e| IngestError::Store(Box::new(e)))?;
        self.aggregate_type.push(A::TYPE);
        self.aggregate_id.push(aggregate_id.to_owned());
        self.sequence.push(sequence);
        self.event_type.push(event.event_type());
        self.event_version.push(event.event_version());
        self.payload.push(payload);
        Ok(())
    }
}

/// A call's aggregate as loaded, and the sequence of its last event.
struct Loaded {
    call: Call,
    last_sequence: i64,
}

pub struct BatchAppender {
    pool: PgPool,
    privacy: Privacy,
}

impl BatchAppender {
    pub fn new(pool: PgPool, privacy: &Privacy) -> Self {
        Self {
            pool,
            privacy: privacy.clone(),
        }
    }

    /// Appends the whole batch, or returns `None` when a concurrent append got in first.
    pub async fn append(
        &self,
        batch_id: Uuid,
        s: &Submission,
    ) -> Result<Option<Receipt>, IngestError> {
        let ids: Vec<String> = s
            .calls
            .iter()
            .map(|c| call_aggregate_id(&s.partner_id, &c.call.id))
            .collect();
        let mut loaded = self.load_calls(&ids).await?;
        keyring::refresh_writing_version(&self.pool, &self.privacy)
            .await
            .map_err(|e| IngestError::Store(Box::new(e)))?;

        let mut rows = EventRows::default();
        let mut key_rows = Vec::new();
        let mut outcomes = Vec::with_capacity(s.calls.len());
        for (cmd, id) in commands::accept_calls(batch_id, s).zip(&ids) {
            let call_id = cmd.call.call.id.clone();
            let entry = loaded.entry(id.clone()).or_insert_with(|| Loaded {
                call: Call::default(),
                last_sequence: 0,
            });
            for event in handle(&mut entry.call, CallCommand::AcceptCall(Box::new(cmd))).await? {
                entry.last_sequence += 1;
                outcomes.push((
                    call_id.clone(),
                    match event {
                        CallEvent::CallAccepted(_) => CallOutcome::Accepted,
                        _ => CallOutcome::Duplicate,
                    },
                ));
                let stored = match &event {
                    CallEvent::CallAccepted(accepted) => {
                        let (keys, key_row) =
                            self.privacy
                                .new_key_row(s.partner_id.as_str(), id, &accepted.call);
                        key_rows.push(key_row);
                        seal::seal_event(&self.privacy, id, &event, &keys)
                            .map_err(|e| IngestError::Store(Box::new(e)))?
                    }
                    _ => Cow::Borrowed(&event),
                };
                rows.push::<Call>(id, entry.last_sequence, &stored)?;
            }
        }
        let mut batch = Batch::default();
        let submit = BatchCommand::SubmitBatch(commands::submit_batch(batch_id, s));
        for (i, event) in handle(&mut batch, submit).await?.iter().enumerate() {
            rows.push::<Batch>(&batch_id.to_string(), i as i64 + 1, event)?;
        }

        let metadata = serde_json::to_string(&s.request.event_metadata())
            .map_err(|e| IngestError::Store(Box::new(e)))?;
        match self.insert(&rows, &key_rows, &metadata).await {
            Ok(()) => Ok(Some(Receipt {
                batch_id,
                calls: outcomes,
            })),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(None),
            // A key row wrapped by a master key a rotation retired meanwhile: the call-by-call
            // path wraps again with the current one.
            Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => Ok(None),
            Err(e) => Err(IngestError::from(e)),
        }
    }

    async fn load_calls(&self, ids: &[String]) -> Result<HashMap<String, Loaded>, IngestError> {
        let rows: Vec<(String, i64, serde_json::Value)> = sqlx::query_as(
            "select aggregate_id, sequence, payload from events
             where aggregate_type = $1 and aggregate_id = any($2)
             order by aggregate_id, sequence",
        )
        .bind(Call::TYPE)
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .map_err(IngestError::from)?;
        let mut loaded: HashMap<String, Loaded> = HashMap::new();
        if rows.is_empty() {
            return Ok(loaded);
        }
        // Known calls (duplicates): their keys, to compare the submissions in clear.
        let mut known: Vec<String> = rows.iter().map(|(id, _, _)| id.clone()).collect();
        known.dedup();
        let keys = keyring::load(&self.pool, &self.privacy, &known)
            .await
            .map_err(|e| IngestError::Store(Box::new(e)))?;
        for (id, sequence, payload) in rows {
            let event: CallEvent =
                serde_json::from_value(payload).map_err(|e| IngestError::Store(Box::new(e)))?;
            let event = seal::open_event(&self.privacy, &id, event, keys.get(&id))
                .map_err(|e| IngestError::Store(Box::new(e)))?;
            let entry = loaded.entry(id).or_insert_with(|| Loaded {
                call: Call::default(),
                last_sequence: 0,
            });
            entry.call.apply(event);
            entry.last_sequence = sequence;
        }
        Ok(loaded)
    }

    async fn insert(
        &self,
        rows: &EventRows,
        key_rows: &[CallKeyRow],
        metadata: &str,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        keyring::insert_rows(&mut tx, key_rows).await?;
        sqlx::query(
            "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             select t.aggregate_type, t.aggregate_id, t.sequence, t.event_type, t.event_version, t.payload::jsonb, $7::jsonb
             from unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[])
                  as t(aggregate_type, aggregate_id, sequence, event_type, event_version, payload)",
        )
        .bind(&rows.aggregate_type)
        .bind(&rows.aggregate_id)
        .bind(&rows.sequence)
        .bind(&rows.event_type)
        .bind(&rows.event_version)
        .bind(&rows.payload)
        .bind(metadata)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }
}

/// Runs one command through the aggregate exactly as cqrs-es does, updating it in place.
async fn handle<A>(aggregate: &mut A, command: A::Command) -> Result<Vec<A::Event>, IngestError>
where
    A: Aggregate<Services = ()>,
    A::Error: Send + Sync + 'static,
{
    let sink = EventSink::default();
    aggregate
        .handle(command, &(), &sink)
        .await
        .map_err(|e| IngestError::Store(Box::new(e)))?;
    Ok(sink.collect().await)
}
