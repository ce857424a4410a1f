//! A JSON response written with serde straight from the value, documented in the OpenAPI
//! spec exactly like `Json<T>`.
//!
//! poem-openapi's `Json<T>` first builds a `serde_json::Value` tree of the whole answer and then
//! writes it: for a page of 500 calls with 40 fields each that is most of the request's CPU.
//! Types answered this way must serialise (serde) to the same JSON as their `ToJSON` (a test
//! per type keeps them equal).

use poem::{IntoResponse, Response};
use poem_openapi::payload::Payload;
use poem_openapi::registry::{MetaMediaType, MetaResponse, MetaResponses, MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use poem_openapi::ApiResponse;

pub struct SerdeJson<T>(pub T);

impl<T: Type + serde::Serialize + Send> Payload for SerdeJson<T> {
    const CONTENT_TYPE: &'static str = "application/json; charset=utf-8";

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: serde::Serialize + Send> IntoResponse for SerdeJson<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(body) => Response::builder()
                .content_type("application/json; charset=utf-8")
                .body(body),
            Err(err) => {
                tracing::error!(error = %err, "could not serialise a response");
                Response::builder()
                    .status(poem::http::StatusCode::INTERNAL_SERVER_ERROR)
                    .finish()
            }
        }
    }
}

impl<T: Type + serde::Serialize + Send> ApiResponse for SerdeJson<T> {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: "",
                status: Some(200),
                status_range: None,
                content: vec![MetaMediaType {
                    content_type: Self::CONTENT_TYPE,
                    schema: Self::schema_ref(),
                }],
                headers: vec![],
            }],
        }
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

/// Date-times as poem-openapi writes them (`2024-05-01T12:00:00+00:00`, fractions only when
/// present), for `#[serde(serialize_with)]` on fields of types answered as [`SerdeJson`].
pub mod rfc3339 {
    use chrono::{DateTime, Utc};

    pub fn serialize<S: serde::Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&at.to_rfc3339())
    }

    pub fn option<S: serde::Serializer>(
        at: &Option<DateTime<Utc>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => serialize(at, s),
            None => s.serialize_none(),
        }
    }
}
