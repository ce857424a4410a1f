//! The support API under `/api/v1/admin/`, behind `CALLINGEST_ADMIN_TOKEN` (a bearer token).

use std::sync::Arc;

use callingest_domain::call::{call_aggregate_id, CallCommand, CallError};
use callingest_domain::values::{CallId, PartnerId};
use cqrs_es::AggregateError;
use poem::Request;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::{ApiTags, AppState};
use crate::callbacks::webhook_id;
use crate::event_store::execute;

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

#[OpenApi(tag = "ApiTags::Support")]
impl AdminApi {
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
        request: &Request,
        /// The partner that owns the call.
        partner_id: Path<String>,
        /// The partner's call id.
        call_id: Path<String>,
    ) -> Result<RedeliveryResponse, ApiError> {
        self.authorize(request)?;
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
        match execute(&self.state.calls, &id, command, &metadata).await {
            Ok(_) => Ok(RedeliveryResponse::Scheduled(Json(RedeliveryScheduled {
                success: true,
                partner_id: partner.to_string(),
                call_id: call.to_string(),
                webhook_id: webhook_id(&id),
            }))),
            Err(AggregateError::UserError(CallError::NotAccepted)) => Err(ApiError::not_found()),
            Err(AggregateError::UserError(refusal)) => Err(ApiError::conflict(refusal.to_string())),
            Err(AggregateError::DatabaseConnectionError(err)) => {
                Err(ApiError::unavailable(err.as_ref()))
            }
            Err(other) => Err(ApiError::internal(&other)),
        }
    }
}

impl AdminApi {
    /// The bearer token must equal the configured one (compared in constant time); without a
    /// configured token nobody is let in.
    fn authorize(&self, request: &Request) -> Result<(), ApiError> {
        let expected = self
            .state
            .admin_token
            .as_ref()
            .ok_or_else(ApiError::forbidden)?;
        let presented = request
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        if bool::from(presented.as_bytes().ct_eq(expected.expose().as_bytes())) {
            Ok(())
        } else {
            Err(ApiError::forbidden())
        }
    }
}
