//! A batch as a partner submits it, turned into validated `NewCall`s or into the list of
//! broken rules, each with the path of its field (`data[3].agent.email`).
//!
//! The input is the raw request body rather than a typed DTO: a missing or mistyped field is a
//! rule to report with its path, and fields we do not know are kept, never dropped.
//!
//! Validation costs little whatever the body holds. The body is read in one pass that builds
//! no tree ([`document`]): only the raw text of the first 50 items is kept and the rest are
//! counted. A count over the limit ends validation there. Each kept item is then scanned for
//! nesting and NUL characters ([`scan`]) and read for the fields the contract names
//! ([`item`]); the fields nobody asked for are turned into JSON trees only once the whole batch
//! is valid. At most [`MAX_LISTED_ERRORS`] broken rules are listed, and a field's path is
//! formatted only when a rule it breaks is listed.

mod document;
mod errors;
mod item;
mod raw;
mod raw_json;
mod scan;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::personal::Personal;
use crate::values::{
    CallId, E164Number, EmailAddress, ExternalId, HttpsUrl, RecordingUrl, ShortText, UtcTimestamp,
};
use document::Document;
use errors::{Errors, Path};

pub use errors::MAX_LISTED_ERRORS;
pub use raw_json::RawJson;
pub use scan::MAX_NESTING_DEPTH;

/// Most calls one request may carry.
pub const MAX_CALLS_PER_BATCH: usize = 50;
/// Most metadata pairs per call.
pub const MAX_METADATA_PAIRS: usize = 5;
/// Longest metadata key.
pub const MAX_METADATA_KEY_CHARS: usize = 64;
/// Longest metadata string value, and longest custom field value.
pub const MAX_VALUE_CHARS: usize = 1_000;
/// Most custom fields per call.
pub const MAX_CUSTOM_FIELDS: usize = 10;

/// One broken rule: where (`data[0].call.id`) and what (`id should not be empty`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// The broken rules of a refused batch: the first [`MAX_LISTED_ERRORS`] found, and whether
/// more were found than are listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors {
    pub errors: Vec<FieldError>,
    pub truncated: bool,
}

/// Why a request body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchRejection {
    /// The body is not well-formed JSON, or nests deeper than [`MAX_NESTING_DEPTH`]: the
    /// reader's explanation.
    NotJson(String),
    /// The body is JSON but breaks rules of the contract.
    Invalid(ValidationErrors),
}

/// Fields nobody asked for but a partner sent; kept with the call as the JSON text they came as.
pub type ExtraFields = std::collections::BTreeMap<String, RawJson>;

/// The `call` object of a submission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallDetails {
    pub id: CallId,
    #[serde(default, skip_serializing_if = "Personal::is_erased")]
    pub recording_url: Personal<RecordingUrl>,
    pub start_time: UtcTimestamp,
    pub end_time: UtcTimestamp,
    #[serde(default, skip_serializing_if = "Personal::is_erased")]
    pub contact_number: Personal<E164Number>,
    #[serde(default, skip_serializing_if = "ExtraFields::is_empty")]
    pub extra: ExtraFields,
}

/// The agent who took the call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub id: ExternalId,
    #[serde(default, skip_serializing_if = "Personal::is_erased")]
    pub email: Personal<Option<EmailAddress>>,
    #[serde(default, skip_serializing_if = "Personal::is_erased")]
    pub name: Personal<Option<ShortText>>,
    #[serde(default, skip_serializing_if = "ExtraFields::is_empty")]
    pub extra: ExtraFields,
}

/// The customer on the other end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub id: ExternalId,
    #[serde(default, skip_serializing_if = "Personal::is_erased")]
    pub name: Personal<Option<ShortText>>,
    #[serde(default, skip_serializing_if = "Personal::is_erased")]
    pub email: Personal<Option<EmailAddress>>,
    pub disposition_status: Option<ShortText>,
    #[serde(default, skip_serializing_if = "ExtraFields::is_empty")]
    pub extra: ExtraFields,
}

/// A partner-defined field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomField {
    pub internal_name: String,
    pub value: String,
}

/// One call of a batch, every rule of the contract checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewCall {
    pub call: CallDetails,
    pub agent: Agent,
    pub customer: Customer,
    pub callback_url: Option<HttpsUrl>,
    /// Echoed back unchanged in the callback; key order is kept.
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(default)]
    pub custom_fields: Vec<CustomField>,
    /// Top-level fields outside the contract (`industry`, `function`, ...).
    #[serde(default, skip_serializing_if = "ExtraFields::is_empty")]
    pub extra: ExtraFields,
}

/// Validates a whole request body. Either every call is valid, or the body's broken rules are
/// listed (at most [`MAX_LISTED_ERRORS`] of them).
pub fn validate_batch_json(body: &[u8]) -> Result<Vec<NewCall>, BatchRejection> {
    let not_json = |err: serde_json::Error| BatchRejection::NotJson(err.to_string());
    let mut errors = Errors::default();
    let data = Path::Root("data");
    let (items, count) = match document::read(body).map_err(not_json)? {
        Document::NotObject => {
            errors.report(Path::Root(""), "request body must be a JSON object");
            return Err(BatchRejection::Invalid(errors.into_rejection()));
        }
        Document::NoData => {
            errors.report(data, "data is required");
            return Err(BatchRejection::Invalid(errors.into_rejection()));
        }
        Document::DataNotArray => {
            errors.report(data, "data must be an array");
            return Err(BatchRejection::Invalid(errors.into_rejection()));
        }
        Document::Items { kept, count } => (kept, count),
    };
    if count > MAX_CALLS_PER_BATCH {
        // Nothing more is looked at: the size of the batch is the problem.
        errors.report(
            data,
            format_args!("data must contain at most {MAX_CALLS_PER_BATCH} calls, got {count}"),
        );
        return Err(BatchRejection::Invalid(errors.into_rejection()));
    }
    // PostgreSQL cannot store U+0000 in text or JSON; refuse it here, where the partner is
    // told which field, rather than failing the write. The same walk bounds the nesting
    // (items sit two levels deep: in the body object, in `data`).
    for (index, raw) in items.iter().enumerate() {
        scan::scan(raw, data.index(index).to_string(), 2, &mut errors)
            .map_err(BatchRejection::NotJson)?;
    }
    if !errors.is_empty() {
        return Err(BatchRejection::Invalid(errors.into_rejection()));
    }
    if items.is_empty() {
        errors.report(data, "data must contain at least 1 call");
        return Err(BatchRejection::Invalid(errors.into_rejection()));
    }
    let mut checked = Vec::with_capacity(items.len());
    for (index, raw) in items.iter().enumerate() {
        if errors.is_truncated() {
            break;
        }
        checked.extend(item::check_item(index, raw, &mut errors));
    }
    if !errors.is_empty() {
        return Err(BatchRejection::Invalid(errors.into_rejection()));
    }
    checked
        .into_iter()
        .map(item::CheckedItem::into_call)
        .collect::<Result<_, _>>()
        .map_err(not_json)
}

/// [`validate_batch_json`] for a body already parsed into a JSON tree (tests and tools); a body
/// that nests too deep is reported as one error on the body itself.
pub fn validate_batch(body: &Value) -> Result<Vec<NewCall>, Vec<FieldError>> {
    let text = serde_json::to_vec(body).expect("a JSON tree always serialises");
    validate_batch_json(&text).map_err(|rejection| match rejection {
        BatchRejection::Invalid(invalid) => invalid.errors,
        BatchRejection::NotJson(reason) => vec![FieldError {
            field: String::new(),
            message: reason,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn published_item() -> Value {
        json!({
            "call": {
                "id": "call123",
                "recording_url": "https://example.com/recordings/call123.mp3",
                "start_time": "2023-01-01T10:00:00Z",
                "end_time": "2023-01-01T10:30:00Z",
                "contact_number": "+1234567890"
            },
            "agent": {"id": "agent123", "email": "agent@example.com", "name": "John Doe"},
            "customer": {
                "id": "customer123", "name": "Jane Smith",
                "email": "customer@example.com", "disposition_status": "interested"
            },
            "industry": "Technology",
            "function": "Sales",
            "callback_url": "https://partner.example.com/callback",
            "metadata": {"campaign": "Q1 Outreach", "source": "Website"}
        })
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn the_published_example_is_valid_and_keeps_its_extra_fields() {
        let calls = validate_batch(&json!({"data": [published_item()]})).unwrap();
        assert_eq!(calls.len(), 1);
        let call = &calls[0];
        assert_eq!(call.call.id.as_str(), "call123");
        assert_eq!(call.extra["industry"].to_value(), "Technology");
        assert_eq!(call.extra["function"].to_value(), "Sales");
        assert_eq!(call.metadata["campaign"], "Q1 Outreach");
        assert!(call.custom_fields.is_empty());
    }

    #[test]
    fn an_empty_call_id_is_reported_as_published() {
        let mut item = published_item();
        item["call"]["id"] = json!("");
        let errors = validate_batch(&json!({"data": [item]})).unwrap_err();
        assert_eq!(
            errors,
            vec![FieldError {
                field: "data[0].call.id".into(),
                message: "id should not be empty".into()
            }]
        );
    }

    #[test]
    fn every_broken_rule_of_every_item_is_reported() {
        let mut first = published_item();
        first["agent"]["email"] = json!("nope");
        first["call"]["end_time"] = json!("2023-01-01T09:00:00Z");
        let mut second = published_item();
        second["call"]
            .as_object_mut()
            .unwrap()
            .remove("recording_url");
        second["call"]["contact_number"] = json!(1234567890);
        second["callback_url"] = json!("http://insecure.example.com/cb");
        let body = json!({"data": [first, "not an object", second]});
        let errors = validate_batch(&body).unwrap_err();
        assert_eq!(
            fields(&errors),
            vec![
                "data[0].call.end_time",
                "data[0].agent.email",
                "data[1]",
                "data[2].call.recording_url",
                "data[2].call.contact_number",
                "data[2].callback_url",
            ]
        );
        assert_eq!(errors[3].message, "recording_url is required");
        assert_eq!(errors[4].message, "contact_number must be a string");
    }

    #[test]
    fn the_shape_of_the_document_is_checked_first() {
        assert_eq!(
            fields(&validate_batch(&json!({})).unwrap_err()),
            vec!["data"]
        );
        assert_eq!(
            fields(&validate_batch(&json!({"data": {}})).unwrap_err()),
            vec!["data"]
        );
        assert_eq!(fields(&validate_batch(&json!([])).unwrap_err()), vec![""]);
        let empty = validate_batch(&json!({"data": []})).unwrap_err();
        assert_eq!(empty[0].message, "data must contain at least 1 call");
        let many: Vec<Value> = (0..51).map(|_| published_item()).collect();
        let too_many = validate_batch(&json!({"data": many})).unwrap_err();
        assert_eq!(
            too_many[0].message,
            "data must contain at most 50 calls, got 51"
        );
    }

    #[test]
    fn missing_objects_are_reported_by_their_path() {
        let mut item = published_item();
        item.as_object_mut().unwrap().remove("agent");
        item["customer"] = json!("jane");
        let errors = validate_batch(&json!({"data": [item]})).unwrap_err();
        assert_eq!(fields(&errors), vec!["data[0].agent", "data[0].customer"]);
        assert_eq!(errors[0].message, "agent is required");
        assert_eq!(errors[1].message, "customer must be an object");
    }

    #[test]
    fn metadata_and_custom_fields_have_limits() {
        let mut item = published_item();
        item["metadata"] = json!({"a": 1, "b": {"nested": true}, "c": "x".repeat(1001)});
        item["custom_fields"] = json!([
            {"internal_name": "plan", "value": "gold"},
            {"internal_name": "", "value": "x"},
            {"value": 3}
        ]);
        let errors = validate_batch(&json!({"data": [item]})).unwrap_err();
        assert_eq!(
            fields(&errors),
            vec![
                "data[0].metadata.b",
                "data[0].metadata.c",
                "data[0].custom_fields[1].internal_name",
                "data[0].custom_fields[2].internal_name",
                "data[0].custom_fields[2].value",
            ]
        );

        let mut item = published_item();
        let six: Map<String, Value> = (0..6).map(|i| (format!("k{i}"), json!(i))).collect();
        item["metadata"] = Value::Object(six);
        let errors = validate_batch(&json!({"data": [item]})).unwrap_err();
        assert_eq!(
            errors[0].message,
            "metadata must have at most 5 pairs, got 6"
        );

        let mut item = published_item();
        item["custom_fields"] = json!(vec![json!({"internal_name": "a", "value": "b"}); 11]);
        let errors = validate_batch(&json!({"data": [item]})).unwrap_err();
        assert_eq!(fields(&errors), vec!["data[0].custom_fields"]);
    }

    #[test]
    fn unknown_fields_inside_nested_objects_are_kept() {
        let mut item = published_item();
        item["call"]["direction"] = json!("inbound");
        item["agent"]["team"] = json!({"name": "blue"});
        let calls = validate_batch(&json!({"data": [item]})).unwrap();
        assert_eq!(calls[0].call.extra["direction"].to_value(), "inbound");
        assert_eq!(calls[0].agent.extra["team"].to_value()["name"], "blue");
    }

    #[test]
    fn nul_characters_anywhere_are_refused_with_their_path() {
        let mut item = published_item();
        item["agent"]["name"] = json!("a\u{0}b");
        item["extra_field"] = json!({"k\u{0}": 1});
        let errors = validate_batch(&json!({"data": [item]})).unwrap_err();
        assert_eq!(
            fields(&errors),
            vec!["data[0].agent.name", "data[0].extra_field.k\\u0000"]
        );
        assert_eq!(
            errors[0].message,
            "must not contain the NUL character (\\u0000)"
        );
    }

    #[test]
    fn a_new_call_survives_a_round_trip_through_json() {
        let calls = validate_batch(&json!({"data": [published_item()]})).unwrap();
        let text = serde_json::to_string(&calls[0]).unwrap();
        let back: NewCall = serde_json::from_str(&text).unwrap();
        assert_eq!(back, calls[0]);
    }
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod hostile_tests;
