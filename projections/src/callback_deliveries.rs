//! The `callback_delivery` queue of the callback saga: a row per call whose outcome is due to
//! the partner, with the time of the next attempt. Only this projection creates, reschedules or
//! removes rows; the saga claims them.

use std::collections::HashMap;

use callingest_domain::call::CallEvent;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::event_log::StoredEvent;
use crate::projector::{Projection, ProjectionError};

pub struct CallbackDeliveries;

/// The last word of a page on one call's delivery: due at a time, or gone.
enum Change {
    Due(DateTime<Utc>),
    Remove,
}

#[async_trait::async_trait]
impl Projection for CallbackDeliveries {
    fn name(&self) -> &'static str {
        "callback_deliveries"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["callback_delivery"]
    }

    async fn apply_page(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), ProjectionError> {
        let mut changes: HashMap<&str, Change> = HashMap::new();
        for event in events.iter().filter(|e| e.aggregate_type == "Call") {
            let id = event.aggregate_id.as_str();
            let change = match event
                .decode::<CallEvent>()
                .map_err(|e| ProjectionError::undecodable(event, e))?
            {
                CallEvent::ProcessingCompleted(e) if e.callback_due => Change::Due(e.completed_at),
                CallEvent::ProcessingFailed(e) if e.callback_due => Change::Due(e.failed_at),
                CallEvent::CallbackRedeliveryRequested(e) => Change::Due(e.requested_at),
                CallEvent::CallbackAttemptFailed(e) => match e.next_attempt_at {
                    Some(next) => Change::Due(next),
                    None => Change::Remove,
                },
                CallEvent::CallbackDelivered(_) | CallEvent::CallbackAbandoned(_) => Change::Remove,
                _ => continue,
            };
            changes.insert(id, change);
        }

        let (mut due_ids, mut due_at, mut removed) = (Vec::new(), Vec::new(), Vec::new());
        for (id, change) in changes {
            match change {
                Change::Due(at) => {
                    due_ids.push(id);
                    due_at.push(at);
                }
                Change::Remove => removed.push(id),
            }
        }
        if !removed.is_empty() {
            sqlx::query("delete from callback_delivery where call_aggregate_id = any($1)")
                .bind(&removed)
                .execute(&mut *conn)
                .await?;
        }
        if !due_ids.is_empty() {
            // A new due time ends the previous attempt: its lease goes with it.
            sqlx::query(
                "insert into callback_delivery (call_aggregate_id, due_at)
                 select * from unnest($1::text[], $2::timestamptz[])
                 on conflict (call_aggregate_id) do update
                 set due_at = excluded.due_at, lease_until = null, lease_owner = null",
            )
            .bind(&due_ids)
            .bind(&due_at)
            .execute(&mut *conn)
            .await?;
            // The partners' turns in the delivery pool (see `src/jobs/claim.rs`).
            sqlx::query(
                "insert into job_queue_partner (queue, partner_id, idle_until)
                 select 'callbacks', partner_id, min(due_at) from callback_delivery
                 where call_aggregate_id = any($1)
                 group by partner_id
                 on conflict (queue, partner_id) do update
                 set idle_until = least(job_queue_partner.idle_until, excluded.idle_until)",
            )
            .bind(&due_ids)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}
