//! Per-request plumbing: a request id (in the `x-request-id` answer header, every log line of
//! the request and the events it writes), one log line per request, and HTTP metrics.

use std::time::Instant;

use poem::{Endpoint, IntoResponse, Request, Response, Result};
use tracing::Instrument;

use super::error::ApiError;

/// The id of the request being served, set for handlers in the request's extensions.
#[derive(Clone)]
pub struct RequestId(pub String);

pub async fn observe<E: Endpoint>(next: E, mut request: Request) -> Result<Response> {
    let request_id = uuid::Uuid::new_v4().to_string();
    request
        .extensions_mut()
        .insert(RequestId(request_id.clone()));
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %request.method(),
        path = %request.uri().path(),
        partner_id = tracing::field::Empty,
    );
    let started = Instant::now();
    // PostgreSQL cannot hold U+0000: refuse it in the path or query here, once, rather than
    // let it fail a query deep inside.
    let has_nul = |part: Option<&str>| part.is_some_and(|p| p.to_ascii_lowercase().contains("%00"));
    let outcome = if has_nul(Some(request.uri().path())) || has_nul(request.uri().query()) {
        Ok(
            ApiError::bad_request("the URL must not contain the NUL character (%00)")
                .into_response(),
        )
    } else {
        next.call(request)
            .instrument(span.clone())
            .await
            .map(IntoResponse::into_response)
    };
    let mut response = match outcome {
        Ok(response) => response.into_response(),
        Err(err) => err.into_response(),
    };
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    span.in_scope(|| {
        tracing::info!(
            status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "request finished"
        )
    });
    metrics::counter!("callingest_http_requests_total", "status" => status.to_string())
        .increment(1);
    metrics::histogram!("callingest_http_request_duration_seconds").record(elapsed.as_secs_f64());
    if let Ok(value) = request_id.parse() {
        response.headers_mut().insert("x-request-id", value);
    }
    Ok(response)
}
