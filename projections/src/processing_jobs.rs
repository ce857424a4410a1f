//! The `processing_job` queue: one row per accepted call until it completes or fails, due when
//! accepted and rescheduled after each failed fetch attempt. Workers claim rows; only this
//! projection creates, reschedules or removes them.

use std::collections::HashMap;

use callingest_domain::call::CallEvent;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::event_log::StoredEvent;
use crate::projector::{Projection, ProjectionError};

pub struct ProcessingJobs;

/// What a page does to one call's job; later events of the page override earlier ones.
enum Change {
    Create {
        partner_id: String,
        call_id: String,
        recording_url: String,
        due_at: DateTime<Utc>,
    },
    Reschedule(DateTime<Utc>),
    Remove,
}

#[async_trait::async_trait]
impl Projection for ProcessingJobs {
    fn name(&self) -> &'static str {
        "processing_jobs"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["processing_job"]
    }

    async fn apply_page(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), ProjectionError> {
        let mut changes: HashMap<&str, Change> = HashMap::new();
        for event in events.iter().filter(|e| e.aggregate_type == "Call") {
            let id = event.aggregate_id.as_str();
            match event
                .decode::<CallEvent>()
                .map_err(|e| ProjectionError::undecodable(event, e))?
            {
                CallEvent::CallAccepted(e) => {
                    changes.entry(id).or_insert(Change::Create {
                        partner_id: e.partner_id.to_string(),
                        call_id: e.call.call.id.to_string(),
                        recording_url: e.call.call.recording_url.to_string(),
                        due_at: e.accepted_at,
                    });
                }
                CallEvent::RecordingFetchFailed(e) => {
                    if let Some(next) = e.next_attempt_at {
                        match changes.get_mut(id) {
                            Some(Change::Create { due_at, .. }) => *due_at = next,
                            _ => {
                                changes.insert(id, Change::Reschedule(next));
                            }
                        }
                    }
                }
                CallEvent::ProcessingCompleted(_) | CallEvent::ProcessingFailed(_) => {
                    changes.insert(id, Change::Remove);
                }
                _ => {}
            }
        }

        let mut created = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut rescheduled, mut due) = (Vec::new(), Vec::new());
        let mut removed = Vec::new();
        for (id, change) in changes {
            match change {
                Change::Create {
                    partner_id,
                    call_id,
                    recording_url,
                    due_at,
                } => {
                    created.0.push(id);
                    created.1.push(partner_id);
                    created.2.push(call_id);
                    created.3.push(recording_url);
                    created.4.push(due_at);
                }
                Change::Reschedule(at) => {
                    rescheduled.push(id);
                    due.push(at);
                }
                Change::Remove => removed.push(id),
            }
        }
        if !removed.is_empty() {
            sqlx::query("delete from processing_job where call_aggregate_id = any($1)")
                .bind(&removed)
                .execute(&mut *conn)
                .await?;
        }
        if !created.0.is_empty() {
            sqlx::query(
                "insert into processing_job (call_aggregate_id, partner_id, call_id, recording_url, due_at)
                 select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
                 on conflict (call_aggregate_id) do nothing",
            )
            .bind(&created.0)
            .bind(&created.1)
            .bind(&created.2)
            .bind(&created.3)
            .bind(&created.4)
            .execute(&mut *conn)
            .await?;
        }
        if !rescheduled.is_empty() {
            // The attempt that failed is over: its lease goes with the new due time.
            sqlx::query(
                "update processing_job j set due_at = u.due_at, lease_until = null, lease_owner = null
                 from unnest($1::text[], $2::timestamptz[]) as u(id, due_at)
                 where j.call_aggregate_id = u.id",
            )
            .bind(&rescheduled)
            .bind(&due)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}
