//! Every route but ingest reads at most [`SMALL_BODY_BYTES`] of a request body, whoever sends
//! it and before anything else looks at it: the admin API's JSON and the support sign-in form
//! are small, and no other route reads a body at all. (Ingest bounds its own body to 5 MiB, after
//! the checks the contract puts first.)
//!
//! A declared `Content-Length` over the limit is answered 413 at once, unread. A body without
//! one (chunked) has its bytes counted as they arrive: past the limit reading stops and the
//! answer is 413, whatever the handler made of the cut-off body.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;
use poem::{Body, Endpoint, IntoResponse, Request, Response, Result};

use super::error::ApiError;

/// Largest body read by any route but ingest.
pub const SMALL_BODY_BYTES: usize = 64 * 1024;

/// The limit of the route at `path`; `None` for ingest, which applies its own.
fn limit_for(path: &str) -> Option<usize> {
    (path != super::ingest::INGEST_PATH).then_some(SMALL_BODY_BYTES)
}

/// Middleware (for `EndpointExt::around`) applying the limit of each route.
pub async fn limit_body<E: Endpoint>(endpoint: Arc<E>, mut request: Request) -> Result<Response> {
    let Some(limit) = limit_for(request.uri().path()) else {
        return endpoint
            .call(request)
            .await
            .map(IntoResponse::into_response);
    };
    let declared = request
        .header("content-length")
        .and_then(|value| value.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Ok(too_large(limit));
    }
    let exceeded = Arc::new(AtomicBool::new(false));
    let body = request.take_body().into_bytes_stream();
    let mut seen = 0usize;
    let flag = exceeded.clone();
    let counted = body.map(move |chunk| {
        let chunk = chunk?;
        seen += chunk.len();
        if seen > limit {
            flag.store(true, Ordering::Relaxed);
            return Err(std::io::Error::other("request body too large"));
        }
        Ok(chunk)
    });
    request.set_body(Body::from_bytes_stream(counted));
    let result = endpoint.call(request).await;
    if exceeded.load(Ordering::Relaxed) {
        return Ok(too_large(limit));
    }
    result.map(IntoResponse::into_response)
}

fn too_large(limit: usize) -> Response {
    ApiError::payload_too_large(limit).into_response()
}
