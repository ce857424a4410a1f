//! The `processing_job` queue: one row per accepted call until it completes or fails, due when
//! accepted and rescheduled after each failed fetch attempt; when a transcript is due after the
//! analysis, the row moves to the `transcribe` stage (and is rescheduled after each failed
//! transcription attempt). Workers claim rows; only this
//! projection creates, reschedules or removes them.

use std::collections::HashMap;

use callingest_domain::call::CallEvent;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::event_log::StoredEvent;
use crate::opened::open_call_events;
use crate::projector::{Projection, ProjectionError};

/// Opens `CallAccepted` for the recording's address (personal, sealed).
pub struct ProcessingJobs(pub callingest_privacy::Privacy);

/// What a page does to one call's job; later events of the page override earlier ones.
#[derive(Default)]
struct Change {
    /// The call was accepted in this page: a new row.
    new: Option<NewJob>,
    /// The job is next due then (a retry, or the hand-over to transcription); the lease of the
    /// step that ended is released.
    due_at: Option<DateTime<Utc>>,
    stage: Option<&'static str>,
    recording_sha256: Option<String>,
    remove: bool,
}

struct NewJob {
    partner_id: String,
    call_id: String,
    recording_url: String,
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
        let calls = events.iter().filter(|e| e.aggregate_type == "Call");
        for (event, decoded) in open_call_events(&mut *conn, &self.0, calls).await? {
            let change = changes.entry(event.aggregate_id.as_str()).or_default();
            match decoded {
                CallEvent::CallAccepted(e) => {
                    change.new.get_or_insert(NewJob {
                        partner_id: e.partner_id.to_string(),
                        call_id: e.call.call.id.to_string(),
                        // Erased before it was fetched: an empty address, which the fetch
                        // refuses as invalid, so the call fails rather than waits forever.
                        recording_url: e
                            .call
                            .call
                            .recording_url
                            .clear()
                            .map(ToString::to_string)
                            .unwrap_or_default(),
                    });
                    change.due_at.get_or_insert(e.accepted_at);
                }
                CallEvent::RecordingFetchFailed(e) => {
                    change.due_at = e.next_attempt_at.or(change.due_at)
                }
                CallEvent::RecordingFetched(e) => change.recording_sha256 = Some(e.sha256),
                CallEvent::RecordingAnalyzed(e) if e.transcription_due => {
                    change.stage = Some("transcribe");
                    change.due_at = Some(e.analyzed_at);
                }
                CallEvent::TranscriptionFailed(e) => {
                    change.due_at = e.next_attempt_at.or(change.due_at)
                }
                CallEvent::ProcessingCompleted(_) | CallEvent::ProcessingFailed(_) => {
                    change.remove = true;
                }
                _ => {}
            }
        }

        let mut removed = Vec::new();
        let mut created = NewRows::default();
        let mut updated = UpdatedRows::default();
        let mut woken = Woken::default();
        for (id, change) in changes {
            if change.remove {
                removed.push(id);
                continue;
            }
            if let Some(job) = change.new {
                let due_at = change.due_at.expect("set on acceptance");
                let stage = change.stage.unwrap_or("fetch");
                woken.wake(stage, &job.partner_id, due_at);
                created.ids.push(id);
                created.partner_ids.push(job.partner_id);
                created.call_ids.push(job.call_id);
                created.urls.push(job.recording_url);
                created.due_at.push(due_at);
                created.stages.push(stage);
                created.sha256.push(change.recording_sha256);
            } else if change.due_at.is_some()
                || change.stage.is_some()
                || change.recording_sha256.is_some()
            {
                updated.ids.push(id);
                updated.due_at.push(change.due_at);
                updated.stages.push(change.stage);
                updated.sha256.push(change.recording_sha256);
            }
        }
        if !removed.is_empty() {
            sqlx::query("delete from processing_job where call_aggregate_id = any($1)")
                .bind(&removed)
                .execute(&mut *conn)
                .await?;
        }
        if !created.ids.is_empty() {
            sqlx::query(
                "insert into processing_job
                     (call_aggregate_id, partner_id, call_id, recording_url, due_at, stage, recording_sha256)
                 select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[], $7::text[])
                 on conflict (call_aggregate_id) do nothing",
            )
            .bind(&created.ids)
            .bind(&created.partner_ids)
            .bind(&created.call_ids)
            .bind(&created.urls)
            .bind(&created.due_at)
            .bind(&created.stages)
            .bind(&created.sha256)
            .execute(&mut *conn)
            .await?;
        }
        if !updated.ids.is_empty() {
            // A new due time means the step that held the lease is over: the lease goes too.
            // Rows rescheduled or moved to another stage come back to wake their partner.
            let rows: Vec<(String, String, DateTime<Utc>, bool)> = sqlx::query_as(
                "update processing_job j
                 set due_at = coalesce(u.due_at, j.due_at),
                     stage = coalesce(u.stage, j.stage),
                     recording_sha256 = coalesce(u.sha256, j.recording_sha256),
                     lease_until = case when u.due_at is null then j.lease_until end,
                     lease_owner = case when u.due_at is null then j.lease_owner end
                 from unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[])
                     as u(id, due_at, stage, sha256)
                 where j.call_aggregate_id = u.id
                 returning j.stage, j.partner_id, j.due_at, (u.due_at is not null or u.stage is not null)",
            )
            .bind(&updated.ids)
            .bind(&updated.due_at)
            .bind(&updated.stages)
            .bind(&updated.sha256)
            .fetch_all(&mut *conn)
            .await?;
            for (stage, partner, due_at, queued) in &rows {
                if *queued {
                    woken.wake(stage, partner, *due_at);
                }
            }
        }
        woken.store(conn).await?;
        Ok(())
    }
}

/// The partners of jobs a page queued or rescheduled, per stage, with their earliest due time:
/// they join their pool's rotation, and are woken if they were resting (see
/// `src/jobs/claim.rs`, which takes the turns). Gathered from the values the page writes, so
/// the rows just written are not read back.
#[derive(Default)]
struct Woken(HashMap<(String, String), DateTime<Utc>>);

impl Woken {
    fn wake(&mut self, stage: &str, partner_id: &str, due_at: DateTime<Utc>) {
        self.0
            .entry((stage.to_owned(), partner_id.to_owned()))
            .and_modify(|earliest| *earliest = (*earliest).min(due_at))
            .or_insert(due_at);
    }

    async fn store(self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        if self.0.is_empty() {
            return Ok(());
        }
        let mut stages = Vec::with_capacity(self.0.len());
        let mut partners = Vec::with_capacity(self.0.len());
        let mut due = Vec::with_capacity(self.0.len());
        for ((stage, partner), due_at) in self.0 {
            stages.push(stage);
            partners.push(partner);
            due.push(due_at);
        }
        sqlx::query(
            "insert into job_queue_partner (queue, partner_id, idle_until)
             select * from unnest($1::text[], $2::text[], $3::timestamptz[])
             on conflict (queue, partner_id) do update
             set idle_until = least(job_queue_partner.idle_until, excluded.idle_until)",
        )
        .bind(&stages)
        .bind(&partners)
        .bind(&due)
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// Columns of the rows a page inserts, one vector per column (bound as arrays).
#[derive(Default)]
struct NewRows<'a> {
    ids: Vec<&'a str>,
    partner_ids: Vec<String>,
    call_ids: Vec<String>,
    urls: Vec<String>,
    due_at: Vec<DateTime<Utc>>,
    stages: Vec<&'static str>,
    sha256: Vec<Option<String>>,
}

/// Columns of the rows a page changes; `None` keeps the stored value.
#[derive(Default)]
struct UpdatedRows<'a> {
    ids: Vec<&'a str>,
    due_at: Vec<Option<DateTime<Utc>>>,
    stages: Vec<Option<&'static str>>,
    sha256: Vec<Option<String>>,
}
