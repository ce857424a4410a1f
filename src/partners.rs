//! Partners: who may submit calls, with which API key, at what rate.
//!
//! API keys are random 256-bit tokens shown once at creation; only their SHA-256 is stored and
//! keys are compared in constant time.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use callingest_domain::values::PartnerId;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;

/// Requests per minute a partner gets unless told otherwise.
pub const DEFAULT_RATE_LIMIT_PER_MINUTE: u32 = 600;

/// The secrets of a new (or rotated) partner, printed once and never stored in clear (the key).
/// No `Debug`: it holds secrets that must not reach a log line.
#[derive(Clone, Serialize)]
pub struct PartnerCredentials {
    pub partner_id: String,
    pub api_key: String,
    pub signing_secret: String,
}

/// An authenticated partner.
#[derive(Debug, Clone)]
pub struct Partner {
    pub id: PartnerId,
    pub rate_limit_per_minute: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum PartnerError {
    #[error("partner id {0}")]
    InvalidId(String),
    #[error("name must be at most 255 characters, without NUL characters")]
    InvalidName,
    #[error("rate limit must be at least 1 request per minute")]
    InvalidRateLimit,
    #[error("partner {0} already exists")]
    AlreadyExists(String),
    #[error("no partner {0}")]
    NotFound(String),
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

fn random_bytes() -> [u8; 32] {
    rand::random()
}

fn hash_key(api_key: &str) -> [u8; 32] {
    Sha256::digest(api_key.as_bytes()).into()
}

pub async fn create_partner(
    pool: &PgPool,
    partner_id: &str,
    name: Option<&str>,
    rate_limit_per_minute: u32,
) -> Result<PartnerCredentials, PartnerError> {
    create_partner_by(pool, partner_id, name, rate_limit_per_minute, "operator").await
}

/// Creates a partner, recording `actor` (who asked) in the partner audit trail.
pub async fn create_partner_by(
    pool: &PgPool,
    partner_id: &str,
    name: Option<&str>,
    rate_limit_per_minute: u32,
    actor: &str,
) -> Result<PartnerCredentials, PartnerError> {
    let id = PartnerId::parse(partner_id).map_err(|e| PartnerError::InvalidId(e.0))?;
    if rate_limit_per_minute == 0 {
        return Err(PartnerError::InvalidRateLimit);
    }
    if name.is_some_and(|n| n.contains('\0') || n.chars().count() > 255) {
        return Err(PartnerError::InvalidName);
    }
    let api_key = new_api_key();
    let signing_secret = new_signing_secret();
    let inserted = sqlx::query(
        "insert into partner (partner_id, name, api_key_sha256, signing_secret, rate_limit_per_minute)
         values ($1, $2, $3, $4, $5) on conflict (partner_id) do nothing",
    )
    .bind(id.as_str())
    .bind(name.unwrap_or(id.as_str()))
    .bind(hash_key(&api_key).as_slice())
    .bind(&signing_secret)
    .bind(rate_limit_per_minute as i32)
    .execute(pool)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(PartnerError::AlreadyExists(id.to_string()));
    }
    audit(pool, id.as_str(), "created", actor).await?;
    Ok(PartnerCredentials {
        partner_id: id.to_string(),
        api_key,
        signing_secret,
    })
}

fn new_api_key() -> String {
    format!("cik_{}", URL_SAFE_NO_PAD.encode(random_bytes()))
}

fn new_signing_secret() -> String {
    format!("whsec_{}", STANDARD.encode(random_bytes()))
}

async fn audit(
    pool: &PgPool,
    partner_id: &str,
    action: &str,
    actor: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("insert into partner_audit (partner_id, action, actor) values ($1, $2, $3)")
        .bind(partner_id)
        .bind(action)
        .bind(actor)
        .execute(pool)
        .await?;
    Ok(())
}

/// Gives the partner a new API key; the old one stops working at once. Returns the partner's
/// credentials with the new key (shown only this once).
pub async fn rotate_api_key(
    pool: &PgPool,
    partner_id: &str,
    actor: &str,
) -> Result<PartnerCredentials, PartnerError> {
    let api_key = new_api_key();
    let secret: Option<String> = sqlx::query_scalar(
        "update partner set api_key_sha256 = $2, api_key_rotated_at = now()
         where partner_id = $1 returning signing_secret",
    )
    .bind(partner_id)
    .bind(hash_key(&api_key).as_slice())
    .fetch_optional(pool)
    .await?;
    let signing_secret = secret.ok_or_else(|| PartnerError::NotFound(partner_id.to_owned()))?;
    audit(pool, partner_id, "api_key_rotated", actor).await?;
    Ok(PartnerCredentials {
        partner_id: partner_id.to_owned(),
        api_key,
        signing_secret,
    })
}

/// Gives the partner a new callback signing secret, used from the next delivery on.
pub async fn rotate_signing_secret(
    pool: &PgPool,
    partner_id: &str,
    actor: &str,
) -> Result<String, PartnerError> {
    let signing_secret = new_signing_secret();
    let updated = sqlx::query("update partner set signing_secret = $2 where partner_id = $1")
        .bind(partner_id)
        .bind(&signing_secret)
        .execute(pool)
        .await?;
    if updated.rows_affected() == 0 {
        return Err(PartnerError::NotFound(partner_id.to_owned()));
    }
    audit(pool, partner_id, "signing_secret_rotated", actor).await?;
    Ok(signing_secret)
}

/// The partner `partner_id` if `api_key` is its key; `None` for an unknown partner or a wrong
/// key alike, so a caller cannot tell which.
pub async fn authenticate(
    pool: &PgPool,
    partner_id: &str,
    api_key: &str,
) -> Result<Option<Partner>, sqlx::Error> {
    let Ok(id) = PartnerId::parse(partner_id) else {
        return Ok(None);
    };
    let row: Option<(Vec<u8>, i32)> = sqlx::query_as(
        "select api_key_sha256, rate_limit_per_minute from partner where partner_id = $1",
    )
    .bind(id.as_str())
    .fetch_optional(pool)
    .await?;
    let presented = hash_key(api_key);
    let Some((stored, rate_limit)) = row else {
        return Ok(None);
    };
    if !bool::from(stored.as_slice().ct_eq(presented.as_slice())) {
        return Ok(None);
    }
    Ok(Some(Partner {
        id,
        rate_limit_per_minute: rate_limit.max(1) as u32,
    }))
}
