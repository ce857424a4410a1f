//! A JSON response written with serde straight from the value, documented in the OpenAPI
//! spec exactly like `Json<T>` of its documentation type.
//!
//! poem-openapi's `Json<T>` first builds a `serde_json::Value` tree of the whole answer and then
//! writes it: for a page of 500 calls with 40 fields each that is most of the request's CPU.
//! And the views of `crate::queries` know nothing of poem-openapi: they are answered with serde
//! and described by the documentation types of `super::view_schema`.

use poem::{IntoResponse, Response};
use poem_openapi::payload::Payload;
use poem_openapi::registry::{MetaMediaType, MetaResponse, MetaResponses, MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use poem_openapi::ApiResponse;

pub struct SerdeJson<T>(pub T);

/// A value answered with serde whose OpenAPI description is `Schema`, a type of the HTTP layer
/// that writes (`ToJSON`) exactly what the value serialises to: a test per type checks it.
pub trait Documented: serde::Serialize + Send {
    type Schema: Type;
}

impl<T: Documented> Payload for SerdeJson<T> {
    const CONTENT_TYPE: &'static str = "application/json; charset=utf-8";

    fn schema_ref() -> MetaSchemaRef {
        T::Schema::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::Schema::register(registry);
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

impl<T: Documented> ApiResponse for SerdeJson<T> {
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
        T::Schema::register(registry);
    }
}
