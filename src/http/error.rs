//! The one error type of the HTTP layer. Every variant is an answer of the published contract;
//! all share the `ErrorBody` schema so generated clients get one error type.

use callingest_domain::submission::{ValidationErrors, MAX_LISTED_ERRORS};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object};

use callingest_domain::call::CallError;
use callingest_projections::ProjectionError;
use cqrs_es::AggregateError;

use crate::error_chain::caused_by_unavailable_database;
pub use crate::error_chain::ErrorChain;
use crate::ingest::IngestError;
use crate::partners::PartnerError;

/// Body of every 4xx and 5xx answer.
#[derive(Debug, Clone, Object)]
pub struct ErrorBody {
    /// Always `false`.
    pub success: bool,
    /// What went wrong, for people.
    pub message: String,
    /// Every broken rule of the request, on 422 only (at most 100: see `errors_truncated`).
    #[oai(skip_serializing_if_is_none)]
    pub errors: Option<Vec<FieldErrorBody>>,
    /// On 422 only, and only when `true`: the request breaks more rules than the 100 listed in
    /// `errors`; fix those and send it again to see the rest.
    #[oai(skip_serializing_if_is_none)]
    pub errors_truncated: Option<bool>,
}

/// One broken rule of a submitted batch.
#[derive(Debug, Clone, Object)]
pub struct FieldErrorBody {
    /// Path of the field, e.g. `data[0].call.id`.
    pub field: String,
    /// What is wrong with it, e.g. `id should not be empty`.
    pub message: String,
}

fn body(message: impl Into<String>) -> Json<ErrorBody> {
    Json(ErrorBody {
        success: false,
        message: message.into(),
        errors: None,
        errors_truncated: None,
    })
}

/// The window of the rate limit, in seconds (limits are per minute).
const RATE_LIMIT_WINDOW_SECS: u64 = 60;

#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// A tenant header is missing or blank, or the body is not valid JSON.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// Unknown partner, or a missing or wrong API key.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such resource.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The resource is not in a state that allows this.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// The body is larger than 5 MiB.
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
    /// The body is not declared as `application/json`.
    #[oai(status = 415)]
    UnsupportedMediaType(Json<ErrorBody>),
    /// The batch breaks rules of the contract; `errors` lists every one (the first 100, with
    /// `errors_truncated: true` when there are more). Nothing was stored.
    #[oai(status = 422)]
    ValidationFailed(Json<ErrorBody>),
    /// The partner sent more requests per minute than its limit allows, or more batches at
    /// once than are validated for one partner at a time.
    #[oai(status = 429)]
    RateLimited(
        Json<ErrorBody>,
        /// Seconds to wait before the next request is allowed.
        #[oai(header = "Retry-After")]
        u64,
        /// The limit in force: `"per-minute";q=<requests>;w=60`.
        #[oai(header = "RateLimit-Policy")]
        String,
        /// What is left of it: `"per-minute";r=0;t=<seconds until allowed>`.
        #[oai(header = "RateLimit")]
        String,
    ),
    /// Something unexpected failed; details are only in the service's logs.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// The database is unreachable for now (restarting, or a failover under way); try again
    /// shortly.
    #[oai(status = 503)]
    Unavailable(
        Json<ErrorBody>,
        /// Seconds to wait before trying again.
        #[oai(header = "Retry-After")]
        u64,
    ),
}

/// The `Retry-After` of a 503: long enough for the pool to find the database again (a new
/// primary is usually found within seconds of a failover), short enough not to idle.
const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 2;

impl ApiError {
    pub fn forbidden() -> Self {
        Self::Forbidden(body("Forbidden"))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest(body(message))
    }

    pub fn not_found() -> Self {
        Self::NotFound(body("Not found"))
    }

    /// A 404 that says why, for a resource that exists but has nothing to show yet.
    pub fn not_found_because(message: impl Into<String>) -> Self {
        Self::NotFound(body(message))
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict(body(message))
    }

    pub fn payload_too_large(limit_bytes: usize) -> Self {
        Self::PayloadTooLarge(body(format!(
            "Request body is larger than {limit_bytes} bytes"
        )))
    }

    pub fn unsupported_media_type() -> Self {
        Self::UnsupportedMediaType(body("Content-Type must be application/json"))
    }

    pub fn validation_failed(invalid: ValidationErrors) -> Self {
        debug_assert!(invalid.errors.len() <= MAX_LISTED_ERRORS);
        let errors = invalid
            .errors
            .into_iter()
            .map(|e| FieldErrorBody {
                field: e.field,
                message: e.message,
            })
            .collect();
        Self::ValidationFailed(Json(ErrorBody {
            success: false,
            message: "Validation failed".into(),
            errors: Some(errors),
            errors_truncated: invalid.truncated.then_some(true),
        }))
    }

    pub fn rate_limited(limit_per_minute: u32, wait_secs: u64) -> Self {
        Self::RateLimited(
            body(format!(
                "Rate limit exceeded. Try again in {wait_secs} seconds."
            )),
            wait_secs,
            format!("\"per-minute\";q={limit_per_minute};w={RATE_LIMIT_WINDOW_SECS}"),
            format!("\"per-minute\";r=0;t={wait_secs}"),
        )
    }

    /// Logs the cause chain; the partner only learns that it failed.
    pub fn internal(cause: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = %ErrorChain(cause), "request failed");
        Self::Internal(body("Internal server error"))
    }

    /// 429 for a partner whose earlier batches still hold all its turns of validation.
    pub fn validation_queue_full(limit_per_minute: u32) -> Self {
        const WAIT_SECS: u64 = 1;
        let mut answer = Self::rate_limited(limit_per_minute, WAIT_SECS);
        if let Self::RateLimited(body, ..) = &mut answer {
            body.0.message = format!(
                "Too many of your batches are being validated at once. Try again in {WAIT_SECS} seconds."
            );
        }
        answer
    }

    /// 503 when every turn of validation in this process stayed taken.
    pub fn busy() -> Self {
        Self::Unavailable(
            body("Service temporarily unavailable, please retry"),
            UNAVAILABLE_RETRY_AFTER_SECS,
        )
    }

    /// A 503 that says why, without logging (probes ask often, and expect it while starting).
    pub fn unavailable_because(message: impl Into<String>) -> Self {
        Self::Unavailable(body(message), UNAVAILABLE_RETRY_AFTER_SECS)
    }

    pub fn unavailable(cause: &(dyn std::error::Error + 'static)) -> Self {
        tracing::warn!(error = %ErrorChain(cause), "database unavailable");
        Self::Unavailable(
            body("Service temporarily unavailable, please retry"),
            UNAVAILABLE_RETRY_AFTER_SECS,
        )
    }
}

// Every error of the layers below becomes an answer here, and only here. Database errors are
// 503 when the one classifier (`crate::db::means_unavailable`, applied to the whole chain) says
// the database is unavailable right now, 500 otherwise.

impl ApiError {
    /// 503 or 500 for a failure of storage, by the one classifier.
    fn storage_failure(err: &(dyn std::error::Error + 'static)) -> Self {
        if caused_by_unavailable_database(err) {
            Self::unavailable(err)
        } else {
            Self::internal(err)
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        // Unreachable, restarting or shutting down (a query cut by the server going away
        // included) is 503 like a pool timeout, not 500.
        Self::storage_failure(&err)
    }
}

impl From<IngestError> for ApiError {
    fn from(err: IngestError) -> Self {
        match &err {
            IngestError::Unavailable(_) => Self::unavailable(&err),
            IngestError::Store(_) => Self::internal(&err),
        }
    }
}

impl From<PartnerError> for ApiError {
    fn from(err: PartnerError) -> Self {
        match err {
            PartnerError::InvalidId(_)
            | PartnerError::InvalidRateLimit
            | PartnerError::InvalidName => Self::bad_request(err.to_string()),
            PartnerError::AlreadyExists(_) => Self::conflict(err.to_string()),
            PartnerError::NotFound(_) => Self::not_found(),
            PartnerError::Database(db) => db.into(),
        }
    }
}

impl From<crate::erasure::ErasureError> for ApiError {
    fn from(err: crate::erasure::ErasureError) -> Self {
        use crate::erasure::ErasureError;
        match err {
            ErasureError::Invalid(message) => Self::bad_request(message),
            ErasureError::Database(db) => db.into(),
            other => Self::storage_failure(&other),
        }
    }
}

impl From<ProjectionError> for ApiError {
    fn from(err: ProjectionError) -> Self {
        Self::storage_failure(&err)
    }
}

impl From<AggregateError<CallError>> for ApiError {
    fn from(err: AggregateError<CallError>) -> Self {
        match err {
            // A command for a call never accepted: as if it did not exist.
            AggregateError::UserError(CallError::NotAccepted) => Self::not_found(),
            AggregateError::UserError(refusal) => Self::conflict(refusal.to_string()),
            AggregateError::DatabaseConnectionError(err) => Self::unavailable(err.as_ref()),
            other => Self::storage_failure(&other),
        }
    }
}

/// Turns any error poem or poem-openapi raised by itself (unknown path, unparsable parameter,
/// ...) into the same JSON shape; answers already built from an [`ApiError`] pass unchanged.
pub async fn json_error(err: poem::Error) -> poem::Response {
    use poem::IntoResponse;
    if err.is_from_response() {
        return err.into_response();
    }
    let status = err.status();
    let message = if status.is_server_error() {
        tracing::error!(error = %err, "unhandled error");
        "Internal server error".to_owned()
    } else if status == poem::http::StatusCode::NOT_FOUND {
        "Not found".to_owned()
    } else {
        err.to_string()
    };
    let mut response = body(message).into_response();
    response.set_status(status);
    response
}
