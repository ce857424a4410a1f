//! The partner read API: a partner's own calls, batches and call histories. Another partner's
//! call answers 404 exactly like a call that does not exist.

use std::sync::Arc;

use callingest_domain::call::call_aggregate_id;
use callingest_domain::values::{CallId, PartnerId};
use chrono::{DateTime, Utc};
use poem_openapi::param::{Path, Query};
use poem_openapi::OpenApi;
use uuid::Uuid;

use super::auth::PartnerAuth;
use super::error::ApiError;
use super::serde_json_body::SerdeJson;
use super::view_schema;
use super::{ApiTags, AppState};
use crate::db::replica::Reads;
use crate::queries::calls::{self, BatchView, CallFilter, CallView, Cursor, TranscriptionStatus};
use crate::queries::history::{self, CallEventView};
use crate::queries::transcripts::{self, TranscriptView};

pub struct CallsApi {
    pub state: Arc<AppState>,
}

/// A page of calls, newest first (described by [`view_schema::CallPage`]).
#[derive(serde::Serialize)]
pub struct CallPage {
    pub calls: Vec<CallView>,
    pub next_cursor: Option<String>,
}

/// The events of one call, oldest first (described by [`view_schema::CallHistory`]).
#[derive(serde::Serialize)]
pub struct CallHistory {
    pub call_id: String,
    pub events: Vec<CallEventView>,
}

/// One page of the calls `filter` selects, for the partner and support listings alike: read
/// from the replica when one serves reads (a listing may lag the primary by up to
/// `CALLINGEST_DB_READ_MAX_LAG_MS`).
pub(super) async fn call_page(
    reads: &Reads,
    filter: &CallFilter,
    limit: Option<i64>,
    cursor: Option<&str>,
) -> Result<SerdeJson<CallPage>, ApiError> {
    let limit = page_limit(limit)?;
    let after = page_cursor(cursor)?;
    let after = after.as_ref();
    let (calls, next) = reads
        .read(
            |pool| async move { calls::list_calls(&pool, filter, after, limit).await },
            |_| false,
        )
        .await?;
    Ok(SerdeJson(CallPage {
        calls,
        next_cursor: next.map(|c| c.encode()),
    }))
}

/// The events of `partner`'s call `call_id`, oldest first, with the metadata of the requests
/// that wrote them for support only; 404 for a call with none (never sent, or another's).
pub(super) async fn call_history_of(
    state: &AppState,
    partner: &PartnerId,
    call_id: &str,
    with_metadata: bool,
) -> Result<SerdeJson<CallHistory>, ApiError> {
    let call = CallId::parse(call_id).map_err(|_| ApiError::not_found())?;
    let aggregate_id = call_aggregate_id(partner, &call);
    let events =
        history::call_history(&state.pool, &state.privacy, &aggregate_id, with_metadata).await?;
    if events.is_empty() {
        return Err(ApiError::not_found());
    }
    Ok(SerdeJson(CallHistory {
        call_id: call.to_string(),
        events,
    }))
}

/// The page size asked for, or 100; refused above 500.
fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(100),
        Some(n) if (1..=calls::MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::bad_request(format!(
            "limit must be between 1 and {}",
            calls::MAX_PAGE
        ))),
    }
}

/// The cursor given, if any; an empty `cursor=` means none.
fn page_cursor(cursor: Option<&str>) -> Result<Option<Cursor>, ApiError> {
    cursor
        .filter(|text| !text.is_empty())
        .map(|text| {
            Cursor::decode(text)
                .ok_or_else(|| ApiError::bad_request("cursor is not one this API gave"))
        })
        .transpose()
}

#[OpenApi(tag = "ApiTags::Calls")]
impl CallsApi {
    /// Get one of your calls
    ///
    /// Its status, timings, recording analytics and callback state.
    #[oai(
        path = "/api/v1/partner/calls/:call_id",
        method = "get",
        operation_id = "getCall"
    )]
    async fn get_call(
        &self,
        PartnerAuth(partner): PartnerAuth,
        /// Your call id.
        call_id: Path<String>,
    ) -> Result<SerdeJson<CallView>, ApiError> {
        calls::get_call(&self.state.pool, partner.id.as_str(), &call_id.0)
            .await?
            .map(SerdeJson)
            .ok_or_else(ApiError::not_found)
    }

    /// List your calls
    ///
    /// Newest first, filtered, with keyset pagination: calls accepted while you page never
    /// shift or repeat entries of the pages that follow.
    #[oai(
        path = "/api/v1/partner/calls",
        method = "get",
        operation_id = "listCalls"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn list_calls(
        &self,
        PartnerAuth(partner): PartnerAuth,
        status: Query<Option<view_schema::CallStatus>>,
        tenant_id: Query<Option<String>>,
        sub_tenant_id: Query<Option<String>>,
        batch_id: Query<Option<Uuid>>,
        /// Only calls accepted after this time.
        accepted_after: Query<Option<DateTime<Utc>>>,
        /// Only calls accepted before this time.
        accepted_before: Query<Option<DateTime<Utc>>>,
        /// Page size, 1 to 500 (default 100).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<i64>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<SerdeJson<CallPage>, ApiError> {
        let filter = CallFilter {
            partner_id: Some(partner.id.to_string()),
            status: status.0.map(Into::into),
            tenant_id: tenant_id.0,
            sub_tenant_id: sub_tenant_id.0,
            batch_id: batch_id.0,
            accepted_after: accepted_after.0,
            accepted_before: accepted_before.0,
        };
        call_page(&self.state.reads, &filter, limit.0, cursor.0.as_deref()).await
    }

    /// Get one of your batches
    ///
    /// Counts of its calls per status, and the calls it brought in.
    #[oai(
        path = "/api/v1/partner/batches/:batch_id",
        method = "get",
        operation_id = "getBatch"
    )]
    async fn get_batch(
        &self,
        PartnerAuth(partner): PartnerAuth,
        /// The `batch_id` answered when the batch was submitted.
        batch_id: Path<String>,
    ) -> Result<SerdeJson<BatchView>, ApiError> {
        let Ok(batch_id) = batch_id.0.parse::<Uuid>() else {
            return Err(ApiError::not_found());
        };
        // From the replica, or the primary when the replica does not have it yet (a batch
        // fetched right after its ingest).
        let partner_id = partner.id.as_str();
        self.state
            .reads
            .read(
                |pool| async move { calls::get_batch(&pool, partner_id, batch_id).await },
                Option::is_none,
            )
            .await?
            .map(SerdeJson)
            .ok_or_else(ApiError::not_found)
    }

    /// Get the event history of one of your calls
    ///
    /// Every recorded step (acceptance, duplicates, fetch attempts, analysis, callback
    /// attempts) with its time and facts, oldest first.
    #[oai(
        path = "/api/v1/partner/calls/:call_id/events",
        method = "get",
        operation_id = "getCallEvents"
    )]
    async fn get_call_events(
        &self,
        PartnerAuth(partner): PartnerAuth,
        /// Your call id.
        call_id: Path<String>,
    ) -> Result<SerdeJson<CallHistory>, ApiError> {
        call_history_of(&self.state, &partner.id, &call_id.0, false).await
    }

    /// Get the transcript of one of your calls
    ///
    /// What was said, per speaker (agent on the left channel, customer on the right; `mono`
    /// when one channel carries both), with times from the start of the recording. Answers 404
    /// with the transcription status while there is no transcript (pending, failed, or none
    /// due because no engine is configured).
    #[oai(
        path = "/api/v1/partner/calls/:call_id/transcript",
        method = "get",
        operation_id = "getCallTranscript"
    )]
    async fn get_call_transcript(
        &self,
        PartnerAuth(partner): PartnerAuth,
        /// Your call id.
        call_id: Path<String>,
    ) -> Result<SerdeJson<TranscriptView>, ApiError> {
        let pool = &self.state.pool;
        let partner_id = partner.id.as_str();
        if let Some(transcript) = transcripts::get_transcript(pool, partner_id, &call_id.0).await? {
            return Ok(SerdeJson(transcript));
        }
        if let Some(transcript) =
            transcripts::transcript_from_events(pool, &self.state.privacy, partner_id, &call_id.0)
                .await?
        {
            return Ok(SerdeJson(transcript));
        }
        let call = calls::get_call(pool, partner.id.as_str(), &call_id.0)
            .await?
            .ok_or_else(ApiError::not_found)?;
        Err(ApiError::not_found_because(
            match call.transcription_status {
                Some(TranscriptionStatus::Unavailable) => {
                    "This call has no transcript: transcription failed".to_owned()
                }
                Some(status) => {
                    format!(
                        "This call has no transcript yet: transcription is {}",
                        status.as_str()
                    )
                }
                None if call.completed_at.is_some() || call.failed_at.is_some() => {
                    "This call has no transcript: none was made".to_owned()
                }
                None => format!(
                    "This call has no transcript yet: the call is {}",
                    call.status.as_str()
                ),
            },
        ))
    }
}
