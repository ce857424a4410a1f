//! A batch as a partner submits it, turned into validated `NewCall`s or into the full list of
//! broken rules, each with the path of its field (`data[3].agent.email`).
//!
//! The input is the raw JSON document rather than a typed DTO: a missing or mistyped field is a
//! rule to report with its path, and fields we do not know are kept, never dropped.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::values::{
    CallId, E164Number, EmailAddress, ExternalId, HttpsUrl, RecordingUrl, ShortText, UtcTimestamp,
    ValueError,
};

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

/// Fields nobody asked for but a partner sent; kept with the call as they came.
pub type ExtraFields = Map<String, Value>;

/// The `call` object of a submission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallDetails {
    pub id: CallId,
    pub recording_url: RecordingUrl,
    pub start_time: UtcTimestamp,
    pub end_time: UtcTimestamp,
    pub contact_number: E164Number,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: ExtraFields,
}

/// The agent who took the call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub id: ExternalId,
    pub email: Option<EmailAddress>,
    pub name: Option<ShortText>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: ExtraFields,
}

/// The customer on the other end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub id: ExternalId,
    pub name: Option<ShortText>,
    pub email: Option<EmailAddress>,
    pub disposition_status: Option<ShortText>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
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
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: ExtraFields,
}

/// Validates a whole request body. Either every call is valid, or every broken rule is listed.
pub fn validate_batch(body: &Value) -> Result<Vec<NewCall>, Vec<FieldError>> {
    let mut errors = Errors::default();
    let Some(root) = body.as_object() else {
        errors.push("", "request body must be a JSON object");
        return Err(errors.0);
    };
    let items = match root.get("data") {
        None | Some(Value::Null) => {
            errors.push("data", "data is required");
            return Err(errors.0);
        }
        Some(Value::Array(items)) => items,
        Some(_) => {
            errors.push("data", "data must be an array");
            return Err(errors.0);
        }
    };
    // PostgreSQL cannot store U+0000 in text or JSON; refuse it here, where the partner is
    // told which field, rather than failing the write.
    find_nul_characters(&root["data"], "data".to_owned(), &mut errors);
    if !errors.0.is_empty() {
        return Err(errors.0);
    }
    if items.is_empty() {
        errors.push("data", "data must contain at least 1 call");
    }
    if items.len() > MAX_CALLS_PER_BATCH {
        errors.push(
            "data",
            format!(
                "data must contain at most {MAX_CALLS_PER_BATCH} calls, got {}",
                items.len()
            ),
        );
    }
    let calls: Vec<NewCall> = items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| parse_item(&format!("data[{i}]"), item, &mut errors))
        .collect();
    if errors.0.is_empty() {
        Ok(calls)
    } else {
        Err(errors.0)
    }
}

/// Reports every string (or object key) under `value` that holds the NUL character.
fn find_nul_characters(value: &Value, path: String, errors: &mut Errors) {
    const MESSAGE: &str = "must not contain the NUL character (\\u0000)";
    match value {
        Value::String(text) if text.contains('\0') => errors.push(path, MESSAGE),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                find_nul_characters(item, format!("{path}[{i}]"), errors);
            }
        }
        Value::Object(fields) => {
            for (key, item) in fields {
                let field_path = format!("{path}.{key}");
                if key.contains('\0') {
                    errors.push(field_path.replace('\0', "\\u0000"), MESSAGE);
                } else {
                    find_nul_characters(item, field_path, errors);
                }
            }
        }
        _ => {}
    }
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }
}

/// Reads the fields of one JSON object, reporting problems under `path`. Every field it is
/// asked about is marked as known; whatever is left over is the object's extra fields.
struct ObjectReader<'a> {
    path: String,
    object: &'a Map<String, Value>,
    known: Vec<&'static str>,
}

impl<'a> ObjectReader<'a> {
    /// Returns `None` (after reporting) when `value` is absent or not an object.
    fn open(
        path: String,
        name: &str,
        value: Option<&'a Value>,
        errors: &mut Errors,
    ) -> Option<Self> {
        match value {
            Some(Value::Object(object)) => Some(Self {
                path,
                object,
                known: Vec::new(),
            }),
            None | Some(Value::Null) => {
                errors.push(path, format!("{name} is required"));
                None
            }
            Some(_) => {
                errors.push(path, format!("{name} must be an object"));
                None
            }
        }
    }

    fn field_path(&self, name: &str) -> String {
        format!("{}.{name}", self.path)
    }

    fn get(&mut self, name: &'static str) -> Option<&'a Value> {
        self.known.push(name);
        self.object.get(name).filter(|v| !v.is_null())
    }

    /// A string field, required or not; `None` after reporting if it is absent or mistyped.
    fn string(
        &mut self,
        name: &'static str,
        required: bool,
        errors: &mut Errors,
    ) -> Option<&'a str> {
        match self.get(name) {
            Some(Value::String(s)) => Some(s),
            Some(_) => {
                errors.push(self.field_path(name), format!("{name} must be a string"));
                None
            }
            None => {
                if required {
                    errors.push(self.field_path(name), format!("{name} is required"));
                }
                None
            }
        }
    }

    /// A string field run through `parse`; a refusal is reported as "`name` `reason`".
    fn parsed<T>(
        &mut self,
        name: &'static str,
        required: bool,
        parse: fn(&str) -> Result<T, ValueError>,
        errors: &mut Errors,
    ) -> Option<T> {
        let raw = self.string(name, required, errors)?;
        match parse(raw) {
            Ok(value) => Some(value),
            Err(ValueError(reason)) => {
                errors.push(self.field_path(name), format!("{name} {reason}"));
                None
            }
        }
    }

    fn extra(&self) -> ExtraFields {
        self.object
            .iter()
            .filter(|(key, _)| !self.known.contains(&key.as_str()))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    }
}

fn parse_item(path: &str, item: &Value, errors: &mut Errors) -> Option<NewCall> {
    let before = errors.0.len();
    let mut reader = ObjectReader::open(path.to_owned(), path, Some(item), errors)?;
    if !item.is_object() {
        return None;
    }

    let call = parse_call(&mut reader, errors);
    let agent = parse_agent(&mut reader, errors);
    let customer = parse_customer(&mut reader, errors);
    let callback_url = reader.parsed("callback_url", false, HttpsUrl::parse, errors);
    let metadata = parse_metadata(&mut reader, errors);
    let custom_fields = parse_custom_fields(&mut reader, errors);
    let extra = reader.extra();

    if errors.0.len() > before {
        return None;
    }
    Some(NewCall {
        call: call?,
        agent: agent?,
        customer: customer?,
        callback_url,
        metadata,
        custom_fields,
        extra,
    })
}

fn parse_call(item: &mut ObjectReader<'_>, errors: &mut Errors) -> Option<CallDetails> {
    let path = item.field_path("call");
    let mut call = ObjectReader::open(path, "call", item.get("call"), errors)?;
    let id = call.parsed("id", true, CallId::parse, errors);
    let recording_url = call.parsed("recording_url", true, RecordingUrl::parse, errors);
    let start_time = call.parsed("start_time", true, UtcTimestamp::parse, errors);
    let end_time = call.parsed("end_time", true, UtcTimestamp::parse, errors);
    let contact_number = call.parsed("contact_number", true, E164Number::parse, errors);
    if let (Some(start), Some(end)) = (start_time, end_time) {
        if end <= start {
            errors.push(
                call.field_path("end_time"),
                "end_time must be after start_time",
            );
        }
    }
    Some(CallDetails {
        id: id?,
        recording_url: recording_url?,
        start_time: start_time?,
        end_time: end_time?,
        contact_number: contact_number?,
        extra: call.extra(),
    })
}

fn parse_agent(item: &mut ObjectReader<'_>, errors: &mut Errors) -> Option<Agent> {
    let path = item.field_path("agent");
    let mut agent = ObjectReader::open(path, "agent", item.get("agent"), errors)?;
    let id = agent.parsed("id", true, ExternalId::parse, errors);
    let email = agent.parsed("email", false, EmailAddress::parse, errors);
    let name = agent.parsed("name", false, ShortText::parse, errors);
    Some(Agent {
        id: id?,
        email,
        name,
        extra: agent.extra(),
    })
}

fn parse_customer(item: &mut ObjectReader<'_>, errors: &mut Errors) -> Option<Customer> {
    let path = item.field_path("customer");
    let mut customer = ObjectReader::open(path, "customer", item.get("customer"), errors)?;
    let id = customer.parsed("id", true, ExternalId::parse, errors);
    let name = customer.parsed("name", false, ShortText::parse, errors);
    let email = customer.parsed("email", false, EmailAddress::parse, errors);
    let disposition_status = customer.parsed("disposition_status", false, ShortText::parse, errors);
    Some(Customer {
        id: id?,
        name,
        email,
        disposition_status,
        extra: customer.extra(),
    })
}

fn parse_metadata(item: &mut ObjectReader<'_>, errors: &mut Errors) -> Map<String, Value> {
    let path = item.field_path("metadata");
    let Some(value) = item.get("metadata") else {
        return Map::new();
    };
    let Some(pairs) = value.as_object() else {
        errors.push(path, "metadata must be an object");
        return Map::new();
    };
    if pairs.len() > MAX_METADATA_PAIRS {
        errors.push(
            path,
            format!(
                "metadata must have at most {MAX_METADATA_PAIRS} pairs, got {}",
                pairs.len()
            ),
        );
        // Do not report on each of possibly thousands of keys: the count is the problem.
        return Map::new();
    }
    for (key, value) in pairs {
        let key_path = format!("{path}.{key}");
        if key.trim().is_empty() {
            errors.push(&path, "metadata keys should not be empty");
        } else if key.chars().count() > MAX_METADATA_KEY_CHARS {
            errors.push(
                &path,
                format!("metadata keys must be at most {MAX_METADATA_KEY_CHARS} characters"),
            );
        }
        match value {
            Value::Number(_) => {}
            Value::String(text) if text.chars().count() > MAX_VALUE_CHARS => errors.push(
                key_path,
                format!("metadata values must be at most {MAX_VALUE_CHARS} characters"),
            ),
            Value::String(_) => {}
            _ => errors.push(key_path, "metadata values must be a string or a number"),
        }
    }
    pairs.clone()
}

fn parse_custom_fields(item: &mut ObjectReader<'_>, errors: &mut Errors) -> Vec<CustomField> {
    let path = item.field_path("custom_fields");
    let Some(value) = item.get("custom_fields") else {
        return Vec::new();
    };
    let Some(fields) = value.as_array() else {
        errors.push(path, "custom_fields must be an array");
        return Vec::new();
    };
    if fields.len() > MAX_CUSTOM_FIELDS {
        errors.push(
            path,
            format!(
                "custom_fields must have at most {MAX_CUSTOM_FIELDS} entries, got {}",
                fields.len()
            ),
        );
        return Vec::new();
    }
    let mut parsed = Vec::with_capacity(fields.len());
    for (i, field) in fields.iter().enumerate() {
        let field_path = format!("{path}[{i}]");
        let Some(mut reader) = ObjectReader::open(field_path, "custom field", Some(field), errors)
        else {
            continue;
        };
        let name = reader.parsed("internal_name", true, parse_internal_name, errors);
        let value = reader.parsed("value", true, parse_custom_value, errors);
        if let (Some(internal_name), Some(value)) = (name, value) {
            parsed.push(CustomField {
                internal_name,
                value,
            });
        }
    }
    parsed
}

fn parse_internal_name(value: &str) -> Result<String, ValueError> {
    ShortText::parse(value)?;
    if value.trim().is_empty() {
        return Err(ValueError("should not be empty".into()));
    }
    Ok(value.to_owned())
}

fn parse_custom_value(value: &str) -> Result<String, ValueError> {
    if value.chars().count() > MAX_VALUE_CHARS {
        return Err(ValueError(format!(
            "must be at most {MAX_VALUE_CHARS} characters"
        )));
    }
    Ok(value.to_owned())
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
        assert_eq!(call.extra["industry"], "Technology");
        assert_eq!(call.extra["function"], "Sales");
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
        assert_eq!(calls[0].call.extra["direction"], "inbound");
        assert_eq!(calls[0].agent.extra["team"]["name"], "blue");
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
