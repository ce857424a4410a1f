//! Who is calling: partners by id and API key, support staff by the admin token.

use poem::Request;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::AppState;
use crate::config::Secret;
use crate::partners::{self, Partner};

/// The token of `Authorization: Bearer <token>`, if any.
fn bearer(request: &Request) -> Option<&str> {
    request
        .header("authorization")?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The partner named by `x-partner-id`, if its key (`x-api-key` or a bearer token) is right;
/// 403 otherwise, the same answer whether the partner or the key is unknown.
pub async fn authenticate_partner(
    state: &AppState,
    request: &Request,
    partner_id: Option<String>,
    api_key: Option<String>,
) -> Result<Partner, ApiError> {
    let api_key = api_key.or_else(|| bearer(request).map(str::to_owned));
    let (Some(partner_id), Some(api_key)) = (partner_id, api_key) else {
        return Err(ApiError::forbidden());
    };
    let partner = partners::authenticate(&state.pool, &partner_id, &api_key)
        .await?
        .ok_or_else(ApiError::forbidden)?;
    tracing::Span::current().record("partner_id", partner.id.as_str());
    Ok(partner)
}

/// Support staff: the bearer token must equal `CALLINGEST_ADMIN_TOKEN` (see
/// [`token_matches`]). Without a configured token nobody is let in.
pub fn authorize_admin(state: &AppState, request: &Request) -> Result<(), ApiError> {
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
