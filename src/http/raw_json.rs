//! A request body documented in the OpenAPI spec as JSON of type `T` but handed to the handler
//! unread. The ingest contract needs this: checks run in the published order (auth before the
//! body), the body is read with a size limit, and a missing or mistyped field is a 422 with its
//! path rather than the framework's 400, with unknown fields kept.

use std::marker::PhantomData;

use poem::{Body, Request, RequestBody};
use poem_openapi::registry::{MetaMediaType, MetaRequest, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};

use super::error::ApiError;

pub struct UncheckedJson<T> {
    body: Body,
    _schema: PhantomData<T>,
}

impl<T> UncheckedJson<T> {
    /// Checks the content type, then reads at most `limit` bytes (counted as they arrive, so a
    /// chunked body is bounded too). Parsing is the caller's: a body may be too costly to parse
    /// on the async runtime's threads.
    pub async fn read(self, request: &Request, limit: usize) -> Result<bytes::Bytes, ApiError> {
        if !is_json(request.content_type()) {
            return Err(ApiError::unsupported_media_type());
        }
        self.body
            .into_bytes_limit(limit)
            .await
            .map_err(|err| match err {
                poem::error::ReadBodyError::PayloadTooLarge => ApiError::payload_too_large(limit),
                other => ApiError::bad_request(format!("Could not read the request body: {other}")),
            })
    }
}

/// `application/json` or any `application/*+json`, parameters (charset) allowed.
fn is_json(content_type: Option<&str>) -> bool {
    let Some(content_type) = content_type else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<'a, T: Type> ApiExtractor<'a> for UncheckedJson<T> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: "application/json",
                schema: T::schema_ref(),
            }],
            required: true,
        })
    }

    async fn from_request(
        _request: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        Ok(Self {
            body: body.take()?,
            _schema: PhantomData,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn json_content_types_are_recognised() {
        assert!(is_json(Some("application/json")));
        assert!(is_json(Some("Application/JSON; charset=utf-8")));
        assert!(is_json(Some("application/vnd.api+json")));
        assert!(!is_json(Some("text/plain")));
        assert!(!is_json(Some("application/x-www-form-urlencoded")));
        assert!(!is_json(None));
    }
}
