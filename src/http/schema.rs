//! Documentation types of the ingest request: they exist to describe the body in the OpenAPI
//! spec (and so in generated clients). The handler never deserialises into them: the raw body
//! is validated by `callingest_domain::submission`, which reports every broken rule with its
//! path and keeps unknown fields. Rules stated here mirror that module.
#![allow(dead_code)]

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use poem_openapi::Object;

/// A batch of 1 to 50 calls.
#[derive(Object)]
pub struct BatchCallRequest {
    #[oai(validator(min_items = 1, max_items = 50))]
    pub data: Vec<CallSubmission>,
}

/// One call. Fields outside this schema (e.g. `industry`, `function`) are accepted and kept.
#[derive(Object)]
pub struct CallSubmission {
    pub call: CallInfo,
    pub agent: AgentInfo,
    pub customer: CustomerInfo,
    /// Where the outcome is POSTed when processing ends: an `https://` URL.
    #[oai(validator(max_length = 2048, pattern = "^https://"))]
    pub callback_url: Option<String>,
    /// At most 5 pairs; keys up to 64 characters, values strings (up to 1,000 characters) or
    /// numbers. Echoed back unchanged in the callback.
    pub metadata: Option<BTreeMap<String, MetadataValue>>,
    /// At most 10 partner-defined fields.
    #[oai(validator(max_items = 10))]
    pub custom_fields: Option<Vec<CustomFieldInfo>>,
    /// Any other field (e.g. `industry`, `function`): accepted and kept with the call.
    #[oai(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// A metadata value: a string or a number.
#[derive(poem_openapi::Union)]
pub enum MetadataValue {
    Text(String),
    Number(f64),
}

#[derive(Object)]
pub struct CallInfo {
    /// Your id of the call, unique for your partner account: submitting it again is a no-op.
    #[oai(validator(min_length = 1, max_length = 255))]
    pub id: String,
    /// Where the recording (MP3, WAV, AAC, M4A or MP4) can be fetched: `http(s)://`.
    #[oai(validator(max_length = 2048, pattern = "^https?://"))]
    pub recording_url: String,
    /// Start of the call, ISO 8601 in UTC (`Z` or `+00:00`).
    pub start_time: DateTime<Utc>,
    /// End of the call, ISO 8601 in UTC, after `start_time`.
    pub end_time: DateTime<Utc>,
    /// E.164 number: `+` then 2 to 15 digits, the first not 0.
    #[oai(validator(pattern = r"^\+[1-9][0-9]{1,14}$"))]
    pub contact_number: String,
    /// Any other field: accepted and kept with the call.
    #[oai(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

#[derive(Object)]
pub struct AgentInfo {
    /// Your id of the agent.
    #[oai(validator(min_length = 1, max_length = 255))]
    pub id: String,
    /// A valid email address.
    #[oai(validator(max_length = 255))]
    pub email: Option<String>,
    #[oai(validator(max_length = 255))]
    pub name: Option<String>,
    /// Any other field: accepted and kept with the call.
    #[oai(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

#[derive(Object)]
pub struct CustomerInfo {
    /// Your id of the customer.
    #[oai(validator(min_length = 1, max_length = 255))]
    pub id: String,
    #[oai(validator(max_length = 255))]
    pub name: Option<String>,
    /// A valid email address.
    #[oai(validator(max_length = 255))]
    pub email: Option<String>,
    /// The customer's disposition in your system.
    #[oai(validator(max_length = 255))]
    pub disposition_status: Option<String>,
    /// Any other field: accepted and kept with the call.
    #[oai(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

#[derive(Object)]
pub struct CustomFieldInfo {
    #[oai(validator(min_length = 1, max_length = 255))]
    pub internal_name: String,
    #[oai(validator(max_length = 1000))]
    pub value: String,
}
