//! The support API under `/api/v1/admin/`, behind `CALLINGEST_ADMIN_TOKEN` (a bearer token).

use std::sync::Arc;

use callingest_domain::call::{call_aggregate_id, CallCommand};
use callingest_domain::values::{CallId, PartnerId};
use chrono::{DateTime, Utc};
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::auth::AdminAuth;
use super::calls::{call_history_of, call_page, CallHistory, CallPage};
use super::error::ApiError;
use super::serde_json_body::SerdeJson;
use super::{ApiTags, AppState};
use crate::callbacks::webhook_id;
use crate::event_store::execute;
use crate::partners::{self, PartnerCredentials};
use crate::queries::calls::CallFilter;

pub struct AdminApi {
    pub state: Arc<AppState>,
}

/// A fresh series of callback attempts was scheduled.
#[derive(Object)]
pub struct RedeliveryScheduled {
    /// Always `true`.
    pub success: bool,
    pub partner_id: String,
    pub call_id: String,
    /// The `webhook-id` the deliveries carry: the same as the earlier ones of this call.
    pub webhook_id: String,
}

#[derive(ApiResponse)]
pub enum RedeliveryResponse {
    /// Scheduled: the first attempt goes out at once.
    #[oai(status = 202)]
    Scheduled(Json<RedeliveryScheduled>),
}

/// Credentials of a partner: the API key is shown only in this answer.
#[derive(Object)]
pub struct PartnerCredentialsBody {
    pub partner_id: String,
    /// Send as `x-api-key` (or `Authorization: Bearer`). Stored only as a hash.
    pub api_key: String,
    /// `whsec_…`: the key of callback signatures.
    pub signing_secret: String,
}

impl From<PartnerCredentials> for PartnerCredentialsBody {
    fn from(c: PartnerCredentials) -> Self {
        Self {
            partner_id: c.partner_id,
            api_key: c.api_key,
            signing_secret: c.signing_secret,
        }
    }
}

/// A new callback signing secret.
#[derive(Object)]
pub struct SigningSecretBody {
    pub partner_id: String,
    /// `whsec_…`, used from the next callback on.
    pub signing_secret: String,
}

/// A partner to create.
#[derive(Object)]
pub struct NewPartner {
    /// 1 to 64 of `A-Z a-z 0-9 . _ -`.
    #[oai(validator(pattern = r"^[A-Za-z0-9._-]{1,64}$"))]
    pub id: String,
    /// Display name (defaults to the id).
    #[oai(nullable, validator(max_length = 255))]
    pub name: Option<String>,
    /// Ingest requests per minute (default 600).
    #[oai(nullable, validator(minimum(value = "1"), maximum(value = "1000000")))]
    pub rate_limit_per_minute: Option<u32>,
}

#[derive(ApiResponse)]
pub enum PartnerCreated {
    /// Created.
    #[oai(status = 201)]
    Created(Json<PartnerCredentialsBody>),
}

#[OpenApi(tag = "ApiTags::Support")]
impl AdminApi {
    /// Get any call's full event history
    ///
    /// Every event with its metadata: the request id, source IP and user agent of the
    /// submitting request, or the worker that recorded a processing step.
    #[oai(
        path = "/api/v1/admin/partners/:partner_id/calls/:call_id/events",
        method = "get",
        operation_id = "getCallEventsAsSupport"
    )]
    async fn call_events(
        &self,
        _admin: AdminAuth,
        partner_id: Path<String>,
        call_id: Path<String>,
    ) -> Result<SerdeJson<CallHistory>, ApiError> {
        let partner = PartnerId::parse(&partner_id.0).map_err(|_| ApiError::not_found())?;
        call_history_of(&self.state, &partner, &call_id.0, true).await
    }

    /// Search all calls
    ///
    /// By partner, tenant, status and acceptance time; newest first, keyset pagination.
    #[oai(
        path = "/api/v1/admin/calls",
        method = "get",
        operation_id = "searchCalls"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn search_calls(
        &self,
        _admin: AdminAuth,
        partner_id: Query<Option<String>>,
        tenant_id: Query<Option<String>>,
        status: Query<Option<super::view_schema::CallStatus>>,
        accepted_after: Query<Option<DateTime<Utc>>>,
        accepted_before: Query<Option<DateTime<Utc>>>,
        /// Page size, 1 to 500 (default 100).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<i64>>,
        cursor: Query<Option<String>>,
    ) -> Result<SerdeJson<CallPage>, ApiError> {
        let filter = CallFilter {
            partner_id: partner_id.0,
            status: status.0.map(Into::into),
            tenant_id: tenant_id.0,
            accepted_after: accepted_after.0,
            accepted_before: accepted_before.0,
            ..Default::default()
        };
        call_page(&self.state.reads, &filter, limit.0, cursor.0.as_deref()).await
    }

    /// Create a partner
    #[oai(
        path = "/api/v1/admin/partners",
        method = "post",
        operation_id = "createPartner"
    )]
    async fn create_partner(
        &self,
        _admin: AdminAuth,
        body: Json<NewPartner>,
    ) -> Result<PartnerCreated, ApiError> {
        let rate = body
            .0
            .rate_limit_per_minute
            .unwrap_or(partners::DEFAULT_RATE_LIMIT_PER_MINUTE);
        let credentials = partners::create_partner_by(
            &self.state.pool,
            &body.0.id,
            body.0.name.as_deref(),
            rate,
            "support",
        )
        .await?;
        Ok(PartnerCreated::Created(Json(credentials.into())))
    }

    /// Rotate a partner's API key
    ///
    /// The old key stops working at once; the rotation is recorded in the partner audit trail.
    #[oai(
        path = "/api/v1/admin/partners/:partner_id/api-key/rotate",
        method = "post",
        operation_id = "rotatePartnerApiKey"
    )]
    async fn rotate_api_key(
        &self,
        _admin: AdminAuth,
        partner_id: Path<String>,
    ) -> Result<Json<PartnerCredentialsBody>, ApiError> {
        let credentials =
            partners::rotate_api_key(&self.state.pool, &partner_id.0, "support").await?;
        Ok(Json(credentials.into()))
    }

    /// Rotate a partner's callback signing secret
    #[oai(
        path = "/api/v1/admin/partners/:partner_id/signing-secret/rotate",
        method = "post",
        operation_id = "rotatePartnerSigningSecret"
    )]
    async fn rotate_signing_secret(
        &self,
        _admin: AdminAuth,
        partner_id: Path<String>,
    ) -> Result<Json<SigningSecretBody>, ApiError> {
        let signing_secret =
            partners::rotate_signing_secret(&self.state.pool, &partner_id.0, "support").await?;
        Ok(Json(SigningSecretBody {
            partner_id: partner_id.0,
            signing_secret,
        }))
    }

    /// Redeliver a call's callback
    ///
    /// Schedules a fresh series of attempts (up to 4) of the call's outcome to its
    /// `callback_url`, recorded as `CallbackRedeliveryRequested`. Requires
    /// `Authorization: Bearer <CALLINGEST_ADMIN_TOKEN>` (403 otherwise). 404 for an unknown
    /// call; 409 when the call has no `callback_url`, has not finished, or a delivery is
    /// already scheduled.
    #[oai(
        path = "/api/v1/admin/partners/:partner_id/calls/:call_id/callback/redeliver",
        method = "post",
        operation_id = "redeliverCallback"
    )]
    async fn redeliver_callback(
        &self,
        _admin: AdminAuth,
        request: &Request,
        /// The partner that owns the call.
        partner_id: Path<String>,
        /// The partner's call id.
        call_id: Path<String>,
    ) -> Result<RedeliveryResponse, ApiError> {
        let (Ok(partner), Ok(call)) = (PartnerId::parse(&partner_id.0), CallId::parse(&call_id.0))
        else {
            return Err(ApiError::not_found());
        };
        let id = call_aggregate_id(&partner, &call);
        let command = CallCommand::RequestCallbackRedelivery {
            requested_by: "support".to_owned(),
            at: chrono::Utc::now(),
        };
        let metadata = super::ingest::request_context(request).event_metadata();
        execute(&self.state.calls, &id, command, &metadata).await?;
        Ok(RedeliveryResponse::Scheduled(Json(RedeliveryScheduled {
            success: true,
            partner_id: partner.to_string(),
            call_id: call.to_string(),
            webhook_id: webhook_id(&id),
        })))
    }
}
