//! Every route but ingest reads at most [`SMALL_BODY_BYTES`] of a request body, whoever sends
//! it and before anything else looks at it: the admin API's JSON and the support sign-in form
//! are small, and no other route reads a body at all. (Ingest bounds its own body to 5 MiB, after
//! the checks the contract puts first.)
//!
//! A declared `Content-Length` over the limit is answered 413 at once, unread. A body without
//! one (chunked) is read up to the limit before the route's handler runs: past the limit reading
//! stops and the answer is 413.

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
    if declared.is_none() {
        // Chunked: read up to the limit before any handler runs, so the answer does not depend
        // on what a handler checks first (credentials, say): too large is too large, whoever
        // sends it. At most the limit is held in memory.
        let mut stream = request.take_body().into_bytes_stream();
        let mut buffered = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|err| {
                poem::Error::from_string(err.to_string(), poem::http::StatusCode::BAD_REQUEST)
            })?;
            if buffered.len() + chunk.len() > limit {
                return Ok(too_large(limit));
            }
            buffered.extend_from_slice(&chunk);
        }
        request.set_body(Body::from_vec(buffered));
    }
    endpoint
        .call(request)
        .await
        .map(IntoResponse::into_response)
}

fn too_large(limit: usize) -> Response {
    ApiError::payload_too_large(limit).into_response()
}
