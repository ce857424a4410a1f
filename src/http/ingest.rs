//! `POST /api/v1/partner/ingest/batch-call`: the published ingest contract.

use std::sync::Arc;

use callingest_domain::submission::{validate_batch_json, BatchRejection};
use callingest_domain::values::TenantId;
use poem::Request;
use poem_openapi::param::Header;
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi};

use super::auth::PartnerAuth;
use super::error::ApiError;
use super::raw_json::UncheckedJson;
use super::schema::BatchCallRequest;
use super::validation_gate::GateRefusal;
use super::{ApiTags, AppState};
use crate::ingest::{CallOutcome, Receipt, RequestContext, Submission};

/// Largest request body accepted: 5 MiB, chunked bodies included.
pub const MAX_BODY_BYTES: usize = 5 * 1024 * 1024;

/// The path of the endpoint below (which bounds its body itself, after authentication).
pub const INGEST_PATH: &str = "/api/v1/partner/ingest/batch-call";

pub struct IngestApi {
    pub state: Arc<AppState>,
}

/// The batch was stored: every call is accepted or was already known.
#[derive(Object)]
pub struct BatchAccepted {
    /// Always `true`.
    pub success: bool,
    /// Id given to this batch by the service.
    pub batch_id: String,
    /// What became of each call, in the order sent.
    pub calls: Vec<CallReceipt>,
}

#[derive(Object)]
pub struct CallReceipt {
    /// The call id as sent.
    pub id: String,
    pub status: CallReceiptStatus,
}

#[derive(Enum, Clone, Copy)]
#[oai(rename_all = "lowercase")]
pub enum CallReceiptStatus {
    /// New: it will be processed.
    Accepted,
    /// This call id was already submitted by your account: it is not processed again.
    Duplicate,
}

impl From<Receipt> for BatchAccepted {
    fn from(receipt: Receipt) -> Self {
        let calls = receipt
            .calls
            .into_iter()
            .map(|(id, outcome)| CallReceipt {
                id: id.to_string(),
                status: match outcome {
                    CallOutcome::Accepted => CallReceiptStatus::Accepted,
                    CallOutcome::Duplicate => CallReceiptStatus::Duplicate,
                },
            })
            .collect();
        Self {
            success: true,
            batch_id: receipt.batch_id.to_string(),
            calls,
        }
    }
}

#[OpenApi(tag = "ApiTags::Ingest")]
impl IngestApi {
    /// Submit a batch of calls
    ///
    /// Takes up to 50 calls for asynchronous processing. Checks run in this order: API key
    /// (403), tenant headers (400), rate limit (429), then the body (415, 413, 400, 422).
    /// A 200 means every call is durably stored. Call ids are idempotency keys: a call id your
    /// account already sent is answered `duplicate` and not processed again. A 422 lists at
    /// most 100 broken rules (`errors_truncated: true` when there are more). One partner's
    /// batches are validated one at a time by default: a batch that waits more than 2 s for
    /// its turn is answered 429.
    #[oai(
        path = "/api/v1/partner/ingest/batch-call",
        method = "post",
        operation_id = "submitBatchCall"
    )]
    async fn submit_batch_call(
        &self,
        PartnerAuth(partner): PartnerAuth,
        request: &Request,
        /// Tenant the calls belong to. Required.
        #[oai(name = "x-tenant-id")]
        tenant_id: Header<Option<String>>,
        /// Sub-tenant the calls belong to. Required.
        #[oai(name = "x-sub-tenant-id")]
        sub_tenant_id: Header<Option<String>>,
        body: UncheckedJson<BatchCallRequest>,
    ) -> Result<Json<BatchAccepted>, ApiError> {
        let tenant_id = tenant_header("x-tenant-id", tenant_id.0, "Tenant ID is required")?;
        let sub_tenant_id = tenant_header(
            "x-sub-tenant-id",
            sub_tenant_id.0,
            "Sub-Tenant ID is required",
        )?;
        self.state.rate_limits.check(&partner).await?;

        let body = body.read(request, MAX_BODY_BYTES).await?;
        let calls = self
            .state
            .validation
            .run(partner.id.as_str(), move || validate_batch_json(&body))
            .await
            .map_err(|refusal| match refusal {
                GateRefusal::PartnerBusy => {
                    ApiError::validation_queue_full(partner.rate_limit_per_minute)
                }
                GateRefusal::Busy => ApiError::busy(),
                GateRefusal::Failed => {
                    ApiError::internal(&std::io::Error::other("batch validation panicked"))
                }
            })?
            .map_err(|rejection| match rejection {
                BatchRejection::NotJson(reason) => {
                    ApiError::bad_request(format!("Request body is not valid JSON: {reason}"))
                }
                BatchRejection::Invalid(invalid) => ApiError::validation_failed(invalid),
            })?;
        let submission = Submission {
            partner_id: partner.id,
            tenant_id,
            sub_tenant_id,
            calls,
            received_at: chrono::Utc::now(),
            request: request_context(request),
        };
        let receipt = self.state.ingest.submit(&submission).await?;
        Ok(Json(receipt.into()))
    }
}

fn tenant_header(name: &str, value: Option<String>, missing: &str) -> Result<TenantId, ApiError> {
    let value = value.unwrap_or_default();
    if value.trim().is_empty() {
        return Err(ApiError::bad_request(missing));
    }
    TenantId::parse(&value).map_err(|e| ApiError::bad_request(format!("{name} {e}")))
}

/// Who made the request, for the metadata of the events it writes.
pub(super) fn request_context(request: &Request) -> RequestContext {
    let request_id = request
        .extensions()
        .get::<super::observe::RequestId>()
        .map(|id| id.0.clone())
        .unwrap_or_default();
    let user_agent: String = request
        .header("user-agent")
        .unwrap_or("")
        .chars()
        .take(256)
        .collect();
    RequestContext {
        request_id,
        source_ip: request
            .remote_addr()
            .as_socket_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default(),
        user_agent,
    }
}
