//! Support API for projections: the events they parked, and applying those again. Behind
//! `CALLINGEST_ADMIN_TOKEN` like the rest of `/api/v1/admin/`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::auth::AdminAuth;
use super::error::ApiError;
use super::{ApiTags, AppState};
use callingest_projections::parking::{self, ParkedEvent};
use callingest_projections::{Projection, Projector};

pub struct AdminProjectionsApi {
    pub state: Arc<AppState>,
}

/// An event a projection has not applied: it failed, or it waits behind a failed event of the
/// same aggregate. The event itself is unchanged in the event log.
#[derive(Object)]
pub struct ProjectionFailure {
    /// `read_models`, `processing_jobs`, `callback_deliveries` or `transcripts`.
    pub projection: String,
    /// The event's position in the log.
    pub global_position: i64,
    /// The id of the transaction that wrote the event (the log is read in this order).
    pub tx_id: i64,
    /// `Call` or `Batch`.
    pub aggregate_type: String,
    /// For a call: `{partner_id}:{call_id}`.
    pub aggregate_id: String,
    /// The event's sequence number within its aggregate.
    pub sequence: i64,
    /// E.g. `CallAccepted`.
    pub event_type: String,
    /// Null when this event itself failed; otherwise the `global_position` of the failed event
    /// of the same aggregate it is held behind (so the aggregate's events apply in order).
    pub held_behind: Option<i64>,
    /// Why the event failed; for a held event, why the event it waits behind failed.
    pub error: String,
    /// When it was parked (or last retried without success).
    pub failed_at: DateTime<Utc>,
}

impl From<ParkedEvent> for ProjectionFailure {
    fn from(p: ParkedEvent) -> Self {
        Self {
            projection: p.projection,
            global_position: p.global_position,
            tx_id: p.tx_id,
            aggregate_type: p.aggregate_type,
            aggregate_id: p.aggregate_id,
            sequence: p.sequence,
            event_type: p.event_type,
            held_behind: p.held_behind,
            error: p.error,
            failed_at: p.failed_at,
        }
    }
}

/// Parked events in log order, per projection.
#[derive(Object)]
pub struct ProjectionFailures {
    pub failures: Vec<ProjectionFailure>,
    /// More parked events exist than `limit` allowed in this answer.
    pub truncated: bool,
}

/// What retrying one projection's parked events did.
#[derive(Object)]
pub struct ProjectionRetry {
    pub projection: String,
    /// Parked events that now applied (their rows are gone).
    pub applied: u64,
    /// Events still parked: failed again, or held behind one that did.
    pub still_parked: u64,
}

/// The outcome of a retry, one entry per projection retried.
#[derive(Object)]
pub struct ProjectionRetries {
    pub projections: Vec<ProjectionRetry>,
}

/// The projection called `name` (all without one); 400 for a name no projection has.
fn projections_named(
    privacy: &callingest_privacy::Privacy,
    name: Option<&str>,
) -> Result<Vec<Arc<dyn Projection>>, ApiError> {
    let projections: Vec<_> = callingest_projections::all(privacy)
        .into_iter()
        .filter(|p| name.is_none_or(|n| n == p.name()))
        .collect();
    if projections.is_empty() {
        return Err(ApiError::bad_request(
            "unknown projection: use read_models, processing_jobs, callback_deliveries or transcripts",
        ));
    }
    Ok(projections)
}

#[OpenApi(tag = "ApiTags::Support")]
impl AdminProjectionsApi {
    /// List parked projection events
    ///
    /// Events a projection could not decode or apply, parked so it could go on with every
    /// other call, and the later events of their aggregates held behind them. Ordered by
    /// projection, then log order. Requires `Authorization: Bearer <CALLINGEST_ADMIN_TOKEN>`
    /// (403 otherwise); 400 for an unknown projection.
    #[oai(
        path = "/api/v1/admin/projection-failures",
        method = "get",
        operation_id = "listProjectionFailures"
    )]
    async fn list_failures(
        &self,
        _admin: AdminAuth,
        /// Only this projection's.
        projection: Query<Option<String>>,
        /// At most this many, 1 to 1,000 (default 100).
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<i64>>,
    ) -> Result<Json<ProjectionFailures>, ApiError> {
        if let Some(name) = projection.0.as_deref() {
            projections_named(&self.state.privacy, Some(name))?;
        }
        let limit = limit.0.unwrap_or(100);
        let mut parked =
            parking::list(&self.state.pool, projection.0.as_deref(), limit + 1).await?;
        let truncated = parked.len() as i64 > limit;
        parked.truncate(limit as usize);
        Ok(Json(ProjectionFailures {
            failures: parked.into_iter().map(Into::into).collect(),
            truncated,
        }))
    }

    /// Retry parked projection events
    ///
    /// Applies the parked events of one projection (all without `projection`) again, each
    /// aggregate's in log order, as `callingest projections retry` does: events that now apply
    /// are removed from the list, an aggregate's first event that still fails stays parked with
    /// the events behind it. Safe while the projectors run. Requires the admin token (403
    /// otherwise); 400 for an unknown projection.
    #[oai(
        path = "/api/v1/admin/projection-failures/retry",
        method = "post",
        operation_id = "retryProjectionFailures"
    )]
    async fn retry_failures(
        &self,
        _admin: AdminAuth,
        /// Only this projection's.
        projection: Query<Option<String>>,
    ) -> Result<Json<ProjectionRetries>, ApiError> {
        let mut projections = Vec::new();
        for projection in projections_named(&self.state.privacy, projection.0.as_deref())? {
            let name = projection.name();
            let outcome = Projector::new(self.state.pool.clone(), projection)
                .retry()
                .await?;
            projections.push(ProjectionRetry {
                projection: name.to_owned(),
                applied: outcome.applied,
                still_parked: outcome.still_parked,
            });
        }
        Ok(Json(ProjectionRetries { projections }))
    }
}
