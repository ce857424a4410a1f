//! The `transcript` and `transcript_segment` read models: each call's transcript as the
//! `TranscriptProduced` event carries it, one row per call and one per segment.

use callingest_domain::call::{
    split_call_aggregate_id, CallEvent, ErasureScope, TranscriptProduced, TranscriptSegment,
};
use sqlx::PgConnection;

use crate::event_log::StoredEvent;
use crate::opened::open_call_events;
use crate::projector::{Projection, ProjectionError};

/// Opens `TranscriptProduced` for its segments (personal, sealed).
pub struct Transcripts(pub callingest_privacy::Privacy);

#[async_trait::async_trait]
impl Projection for Transcripts {
    fn name(&self) -> &'static str {
        "transcripts"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["transcript", "transcript_segment"]
    }

    async fn apply_page(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), ProjectionError> {
        let mut calls = Columns::default();
        let mut segments = SegmentColumns::default();
        // Only one event type matters: skip the rest without decoding them.
        let produced = events
            .iter()
            .filter(|e| e.aggregate_type == "Call" && e.event_type == "TranscriptProduced");
        for (event, decoded) in open_call_events(&mut *conn, &self.0, produced).await? {
            let CallEvent::TranscriptProduced(t) = decoded else {
                continue;
            };
            let (partner_id, call_id) =
                split_call_aggregate_id(&event.aggregate_id).ok_or_else(|| {
                    let reason = "call aggregate id without ':'";
                    ProjectionError::undecodable(event, serde::de::Error::custom(reason))
                })?;
            segments.push(partner_id, call_id, &t);
            calls.push(partner_id, call_id, t);
        }
        store(&mut *conn, &calls, &segments).await?;
        erase(&mut *conn, events).await?;
        Ok(())
    }
}

/// Writes a page's transcripts (replacing any earlier ones of the same calls).
async fn store(
    conn: &mut PgConnection,
    calls: &Columns,
    segments: &SegmentColumns,
) -> Result<(), ProjectionError> {
    if calls.partner_ids.is_empty() {
        return Ok(());
    }
    // A call completes once, so it has one transcript; replacing keeps a replay harmless.
    sqlx::query(
        "delete from transcript_segment s using unnest($1::text[], $2::text[]) as k(p, c)
         where s.partner_id = k.p and s.call_id = k.c",
    )
    .bind(&calls.partner_ids)
    .bind(&calls.call_ids)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "insert into transcript
             (partner_id, call_id, engine, model, language, text, segment_count, word_count, produced_at)
         select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                              $7::int[], $8::bigint[], $9::timestamptz[])
         on conflict (partner_id, call_id) do update set
             engine = excluded.engine, model = excluded.model, language = excluded.language,
             text = excluded.text, segment_count = excluded.segment_count,
             word_count = excluded.word_count, produced_at = excluded.produced_at",
    )
    .bind(&calls.partner_ids)
    .bind(&calls.call_ids)
    .bind(&calls.engines)
    .bind(&calls.models)
    .bind(&calls.languages)
    .bind(&calls.texts)
    .bind(&calls.segment_counts)
    .bind(&calls.word_counts)
    .bind(&calls.produced_at)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "insert into transcript_segment (partner_id, call_id, seq, channel, start_ms, end_ms, text)
         select * from unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::bigint[], $6::bigint[], $7::text[])",
    )
    .bind(&segments.partner_ids)
    .bind(&segments.call_ids)
    .bind(&segments.seqs)
    .bind(&segments.channels)
    .bind(&segments.starts)
    .bind(&segments.ends)
    .bind(&segments.texts)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A call whose personal data was erased keeps its transcript's figures but no text.
async fn erase(conn: &mut PgConnection, events: &[StoredEvent]) -> Result<(), ProjectionError> {
    let mut partner_ids = Vec::new();
    let mut call_ids = Vec::new();
    for event in events
        .iter()
        .filter(|e| e.aggregate_type == "Call" && e.event_type == "PersonalDataErased")
    {
        let CallEvent::PersonalDataErased(erased) = event
            .decode::<CallEvent>()
            .map_err(|e| ProjectionError::undecodable(event, e))?
        else {
            continue;
        };
        if erased.scope != ErasureScope::Call {
            continue;
        }
        if let Some((partner_id, call_id)) = split_call_aggregate_id(&event.aggregate_id) {
            partner_ids.push(partner_id.to_owned());
            call_ids.push(call_id.to_owned());
        }
    }
    if partner_ids.is_empty() {
        return Ok(());
    }
    scrub(conn, &partner_ids, &call_ids).await?;
    Ok(())
}

/// Removes the text of these calls' transcripts (the erasure request scrubs at once with
/// this too, without waiting for the projection).
pub async fn scrub(
    conn: &mut PgConnection,
    partner_ids: &[String],
    call_ids: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "delete from transcript_segment s using unnest($1::text[], $2::text[]) as k(p, c)
         where s.partner_id = k.p and s.call_id = k.c",
    )
    .bind(partner_ids)
    .bind(call_ids)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "update transcript t set text = '', segment_count = 0
         from unnest($1::text[], $2::text[]) as k(p, c)
         where t.partner_id = k.p and t.call_id = k.c",
    )
    .bind(partner_ids)
    .bind(call_ids)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The segments, none once erased.
pub fn segments(t: &TranscriptProduced) -> &[TranscriptSegment] {
    t.segments.clear().map(Vec::as_slice).unwrap_or_default()
}

/// The transcript text: segment texts in time order, one space between them.
pub fn transcript_text(t: &TranscriptProduced) -> String {
    let parts: Vec<&str> = segments(t)
        .iter()
        .map(|s| s.text.trim())
        .filter(|s| !s.is_empty())
        .collect();
    parts.join(" ")
}

/// `transcript` columns of a page, bound as arrays.
#[derive(Default)]
struct Columns {
    partner_ids: Vec<String>,
    call_ids: Vec<String>,
    engines: Vec<String>,
    models: Vec<String>,
    languages: Vec<String>,
    texts: Vec<String>,
    segment_counts: Vec<i32>,
    word_counts: Vec<i64>,
    produced_at: Vec<chrono::DateTime<chrono::Utc>>,
}

impl Columns {
    fn push(&mut self, partner_id: &str, call_id: &str, t: TranscriptProduced) {
        self.partner_ids.push(partner_id.to_owned());
        self.call_ids.push(call_id.to_owned());
        self.texts.push(transcript_text(&t));
        self.segment_counts.push(segments(&t).len() as i32);
        self.engines.push(t.engine);
        self.models.push(t.model);
        self.languages.push(t.language);
        self.word_counts.push(t.word_count as i64);
        self.produced_at.push(t.produced_at);
    }
}

/// `transcript_segment` columns of a page, bound as arrays.
#[derive(Default)]
struct SegmentColumns {
    partner_ids: Vec<String>,
    call_ids: Vec<String>,
    seqs: Vec<i32>,
    channels: Vec<&'static str>,
    starts: Vec<i64>,
    ends: Vec<i64>,
    texts: Vec<String>,
}

impl SegmentColumns {
    fn push(&mut self, partner_id: &str, call_id: &str, t: &TranscriptProduced) {
        for (seq, segment) in segments(t).iter().enumerate() {
            self.partner_ids.push(partner_id.to_owned());
            self.call_ids.push(call_id.to_owned());
            self.seqs.push(seq as i32);
            self.channels.push(segment.channel.as_str());
            self.starts.push(segment.start_ms as i64);
            self.ends.push(segment.end_ms as i64);
            self.texts.push(segment.text.trim().to_owned());
        }
    }
}
