//! Who is calling: partners by id and API key, support staff by the admin token.
//!
//! Both are extractors declared as OpenAPI security schemes ([`PartnerAuth`], [`AdminAuth`]),
//! taken as the first argument of every operation that needs them: poem-openapi extracts
//! arguments in declaration order, so a missing or wrong credential is refused before tenant
//! headers, rate limit and body are looked at. The refusal is the contract's 403 with its JSON
//! body, never the framework's 401.

use std::sync::Arc;

use poem::{IntoResponse, Request, RequestBody};
use poem_openapi::registry::{MetaSecurityScheme, Registry};
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::AppState;
use crate::config::Secret;
use crate::partners::{self, Partner};

/// Names of the security schemes in the OpenAPI document.
pub const PARTNER_ID_SCHEME: &str = "partnerId";
pub const API_KEY_SCHEME: &str = "apiKey";
pub const BEARER_SCHEME: &str = "bearer";
pub const ADMIN_TOKEN_SCHEME: &str = "adminToken";

/// A partner authenticated by `x-partner-id` and its key, sent as `x-api-key` or as
/// `Authorization: Bearer <key>`. Both headers are required together: the OpenAPI document
/// states this as `[{partnerId, apiKey}, {partnerId, bearer}]` (see
/// [`super::security::require_partner_id_with_each_key`]).
pub struct PartnerAuth(pub Partner);

/// Support staff: the bearer token equals `CALLINGEST_ADMIN_TOKEN` (see [`token_matches`]).
/// Without a configured token nobody is let in.
pub struct AdminAuth;

/// The token of `Authorization: Bearer <token>`, if any.
fn bearer(request: &Request) -> Option<&str> {
    request
        .header("authorization")?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The state the API is served with ([`super::routes`] attaches it to every request).
fn state(request: &Request) -> poem::Result<&Arc<AppState>> {
    request.data::<Arc<AppState>>().ok_or_else(|| {
        refusal(ApiError::internal(&std::io::Error::other(
            "the API is served without its state",
        )))
    })
}

/// An answer of the contract as the error of an extractor: passed through unchanged by
/// [`super::error::json_error`].
fn refusal(answer: ApiError) -> poem::Error {
    poem::Error::from_response(answer.into_response())
}

fn api_key_header(name: &'static str, description: &'static str) -> MetaSecurityScheme {
    MetaSecurityScheme {
        ty: "apiKey",
        description: Some(description),
        name: Some(name),
        key_in: Some("header"),
        scheme: None,
        bearer_format: None,
        flows: None,
        openid_connect_url: None,
    }
}

fn bearer_token(description: &'static str) -> MetaSecurityScheme {
    MetaSecurityScheme {
        ty: "http",
        description: Some(description),
        name: None,
        key_in: None,
        scheme: Some("bearer"),
        bearer_format: None,
        flows: None,
        openid_connect_url: None,
    }
}

impl<'a> ApiExtractor<'a> for PartnerAuth {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        registry.create_security_scheme(
            PARTNER_ID_SCHEME,
            api_key_header(
                "x-partner-id",
                "Your partner id; sent with your API key (`apiKey` or `bearer`).",
            ),
        );
        registry.create_security_scheme(
            API_KEY_SCHEME,
            api_key_header("x-api-key", "Your API key; sent with `x-partner-id`."),
        );
        registry.create_security_scheme(
            BEARER_SCHEME,
            bearer_token(
                "Your API key as `Authorization: Bearer <key>`; sent with `x-partner-id`.",
            ),
        );
    }

    /// Declared one alternative each (poem-openapi's way); the document served and committed
    /// combines them into the two alternatives that hold.
    fn security_schemes() -> Vec<&'static str> {
        vec![PARTNER_ID_SCHEME, API_KEY_SCHEME, BEARER_SCHEME]
    }

    async fn from_request(
        request: &'a Request,
        _body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let state = state(request)?;
        authenticate_partner(state, request)
            .await
            .map(PartnerAuth)
            .map_err(refusal)
    }
}

impl<'a> ApiExtractor<'a> for AdminAuth {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        registry.create_security_scheme(
            ADMIN_TOKEN_SCHEME,
            bearer_token("Support staff: `Authorization: Bearer <CALLINGEST_ADMIN_TOKEN>`."),
        );
    }

    fn security_schemes() -> Vec<&'static str> {
        vec![ADMIN_TOKEN_SCHEME]
    }

    async fn from_request(
        request: &'a Request,
        _body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let state = state(request)?;
        authorize_admin(state, request)
            .map(|()| AdminAuth)
            .map_err(refusal)
    }
}

/// The partner named by `x-partner-id`, if its key (`x-api-key` or a bearer token) is right;
/// 403 otherwise, the same answer whether the partner or the key is unknown.
async fn authenticate_partner(state: &AppState, request: &Request) -> Result<Partner, ApiError> {
    let partner_id = request.header("x-partner-id");
    let api_key = request.header("x-api-key").or_else(|| bearer(request));
    let (Some(partner_id), Some(api_key)) = (partner_id, api_key) else {
        return Err(ApiError::forbidden());
    };
    let partner = partners::authenticate(&state.pool, partner_id, api_key)
        .await?
        .ok_or_else(ApiError::forbidden)?;
    tracing::Span::current().record("partner_id", partner.id.as_str());
    Ok(partner)
}

fn authorize_admin(state: &AppState, request: &Request) -> Result<(), ApiError> {
    let expected = state.admin_token.as_ref().ok_or_else(ApiError::forbidden)?;
    let presented = bearer(request).unwrap_or("");
    if token_matches(presented, expected) {
        Ok(())
    } else {
        Err(ApiError::forbidden())
    }
}

/// Compares hashes of both in constant time, so that neither the content nor the length of
/// the admin token shows in the time taken (comparing the tokens themselves stops at once on
/// a length mismatch).
pub fn token_matches(presented: &str, expected: &Secret) -> bool {
    let presented = Sha256::digest(presented.as_bytes());
    let expected = Sha256::digest(expected.expose().as_bytes());
    bool::from(presented.ct_eq(&expected))
}
