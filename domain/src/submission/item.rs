//! The rules of one item of `data`, read from its raw JSON text: only the fields the contract
//! names are looked at, and a path is formatted only for a rule that is broken.

use std::borrow::Cow;
use std::fmt::Display;

use serde_json::Map;

use super::errors::{Errors, Path};
use super::raw::{self, kind, Kind, Raw};
use super::{
    Agent, CallDetails, CustomField, Customer, ExtraFields, NewCall, MAX_CUSTOM_FIELDS,
    MAX_METADATA_KEY_CHARS, MAX_METADATA_PAIRS, MAX_VALUE_CHARS,
};
use crate::personal::Personal;
use crate::values::{
    CallId, E164Number, EmailAddress, ExternalId, HttpsUrl, RecordingUrl, ShortText, UtcTimestamp,
    ValueError,
};

const ITEM_FIELDS: [&str; 6] = [
    "call",
    "agent",
    "customer",
    "callback_url",
    "metadata",
    "custom_fields",
];
const CALL_FIELDS: [&str; 5] = [
    "id",
    "recording_url",
    "start_time",
    "end_time",
    "contact_number",
];
const AGENT_FIELDS: [&str; 3] = ["id", "email", "name"];
const CUSTOMER_FIELDS: [&str; 4] = ["id", "name", "email", "disposition_status"];

/// A valid item before its unknown fields are read, with the raw objects that hold them.
pub(crate) struct CheckedItem<'de> {
    call: NewCall,
    raw: Raw<'de>,
    raw_call: Raw<'de>,
    raw_agent: Raw<'de>,
    raw_customer: Raw<'de>,
    /// Checked metadata pairs, in the order sent (a repeated key's last value wins).
    metadata: Vec<(Cow<'de, str>, Raw<'de>)>,
}

impl CheckedItem<'_> {
    /// The call with every field nobody asked for kept, as sent. Done only once the whole
    /// batch is known to be valid: these fields may be most of the body.
    pub(crate) fn into_call(self) -> Result<NewCall, serde_json::Error> {
        let mut call = self.call;
        call.extra = raw::other_members(self.raw, &ITEM_FIELDS)?;
        call.call.extra = raw::other_members(self.raw_call, &CALL_FIELDS)?;
        call.agent.extra = raw::other_members(self.raw_agent, &AGENT_FIELDS)?;
        call.customer.extra = raw::other_members(self.raw_customer, &CUSTOMER_FIELDS)?;
        for (key, value) in self.metadata {
            call.metadata.insert(key.into_owned(), raw::tree(value)?);
        }
        Ok(call)
    }
}

/// Checks item `index` of `data`, reporting every broken rule; `Some` when it broke none.
pub(crate) fn check_item<'de>(
    index: usize,
    raw: Raw<'de>,
    errors: &mut Errors,
) -> Option<CheckedItem<'de>> {
    let before = errors.reported();
    let data = Path::Root("data");
    let path = data.index(index);
    let raw = object(path, path, Some(raw), errors)?;
    let [call, agent, customer, callback_url, metadata, custom_fields] =
        raw::members(raw, ITEM_FIELDS);

    let call = parse_call(&path, call, errors);
    let agent = parse_agent(&path, agent, errors);
    let customer = parse_customer(&path, customer, errors);
    let callback_url = parsed(
        &path,
        "callback_url",
        callback_url,
        false,
        HttpsUrl::parse,
        errors,
    );
    let metadata = parse_metadata(&path, metadata, errors);
    let custom_fields = parse_custom_fields(&path, custom_fields, errors);

    if errors.reported() > before {
        return None;
    }
    let ((call, raw_call), (agent, raw_agent), (customer, raw_customer)) =
        (call?, agent?, customer?);
    Some(CheckedItem {
        call: NewCall {
            call,
            agent,
            customer,
            callback_url,
            metadata: Map::new(),
            custom_fields,
            extra: ExtraFields::new(),
        },
        raw,
        raw_call,
        raw_agent,
        raw_customer,
        metadata,
    })
}

/// `value` if it is an object; otherwise `None`, after reporting it absent or mistyped.
fn object<'de>(
    path: Path<'_>,
    name: impl Display,
    value: Option<Raw<'de>>,
    errors: &mut Errors,
) -> Option<Raw<'de>> {
    match value.map(kind) {
        Some(Kind::Object) => value,
        None | Some(Kind::Null) => {
            errors.report(path, format_args!("{name} is required"));
            None
        }
        Some(_) => {
            errors.report(path, format_args!("{name} must be an object"));
            None
        }
    }
}

/// A string member `name` of the object at `parent`; `None` (after reporting, if required or
/// mistyped) when it is absent, null or not a string.
fn string<'de>(
    parent: &Path<'_>,
    name: &str,
    value: Option<Raw<'de>>,
    required: bool,
    errors: &mut Errors,
) -> Option<Cow<'de, str>> {
    match value.map(kind) {
        Some(Kind::String) => value.map(raw::string),
        None | Some(Kind::Null) => {
            if required {
                errors.report(parent.field(name), format_args!("{name} is required"));
            }
            None
        }
        Some(_) => {
            errors.report(parent.field(name), format_args!("{name} must be a string"));
            None
        }
    }
}

/// A string member run through `parse`; a refusal is reported as "`name` `reason`".
fn parsed<T>(
    parent: &Path<'_>,
    name: &str,
    value: Option<Raw<'_>>,
    required: bool,
    parse: fn(&str) -> Result<T, ValueError>,
    errors: &mut Errors,
) -> Option<T> {
    let text = string(parent, name, value, required, errors)?;
    match parse(&text) {
        Ok(value) => Some(value),
        Err(ValueError(reason)) => {
            errors.report(parent.field(name), format_args!("{name} {reason}"));
            None
        }
    }
}

fn parse_call<'de>(
    item: &Path<'_>,
    value: Option<Raw<'de>>,
    errors: &mut Errors,
) -> Option<(CallDetails, Raw<'de>)> {
    let path = item.field("call");
    let raw = object(path, "call", value, errors)?;
    let [id, recording_url, start_time, end_time, contact_number] = raw::members(raw, CALL_FIELDS);
    let id = parsed(&path, "id", id, true, CallId::parse, errors);
    let recording_url = parsed(
        &path,
        "recording_url",
        recording_url,
        true,
        RecordingUrl::parse,
        errors,
    );
    let start_time = parsed(
        &path,
        "start_time",
        start_time,
        true,
        UtcTimestamp::parse,
        errors,
    );
    let end_time = parsed(
        &path,
        "end_time",
        end_time,
        true,
        UtcTimestamp::parse,
        errors,
    );
    let contact_number = parsed(
        &path,
        "contact_number",
        contact_number,
        true,
        E164Number::parse,
        errors,
    );
    if let (Some(start), Some(end)) = (start_time, end_time) {
        if end <= start {
            errors.report(path.field("end_time"), "end_time must be after start_time");
        }
    }
    let details = CallDetails {
        id: id?,
        recording_url: Personal::Clear(recording_url?),
        start_time: start_time?,
        end_time: end_time?,
        contact_number: Personal::Clear(contact_number?),
        extra: ExtraFields::new(),
    };
    Some((details, raw))
}

fn parse_agent<'de>(
    item: &Path<'_>,
    value: Option<Raw<'de>>,
    errors: &mut Errors,
) -> Option<(Agent, Raw<'de>)> {
    let path = item.field("agent");
    let raw = object(path, "agent", value, errors)?;
    let [id, email, name] = raw::members(raw, AGENT_FIELDS);
    let id = parsed(&path, "id", id, true, ExternalId::parse, errors);
    let email = parsed(&path, "email", email, false, EmailAddress::parse, errors);
    let name = parsed(&path, "name", name, false, ShortText::parse, errors);
    let agent = Agent {
        id: id?,
        email: Personal::Clear(email),
        name: Personal::Clear(name),
        extra: ExtraFields::new(),
    };
    Some((agent, raw))
}

fn parse_customer<'de>(
    item: &Path<'_>,
    value: Option<Raw<'de>>,
    errors: &mut Errors,
) -> Option<(Customer, Raw<'de>)> {
    let path = item.field("customer");
    let raw = object(path, "customer", value, errors)?;
    let [id, name, email, disposition_status] = raw::members(raw, CUSTOMER_FIELDS);
    let id = parsed(&path, "id", id, true, ExternalId::parse, errors);
    let name = parsed(&path, "name", name, false, ShortText::parse, errors);
    let email = parsed(&path, "email", email, false, EmailAddress::parse, errors);
    let disposition_status = parsed(
        &path,
        "disposition_status",
        disposition_status,
        false,
        ShortText::parse,
        errors,
    );
    let customer = Customer {
        id: id?,
        name: Personal::Clear(name),
        email: Personal::Clear(email),
        disposition_status,
        extra: ExtraFields::new(),
    };
    Some((customer, raw))
}

fn parse_metadata<'de>(
    item: &Path<'_>,
    value: Option<Raw<'de>>,
    errors: &mut Errors,
) -> Vec<(Cow<'de, str>, Raw<'de>)> {
    let path = item.field("metadata");
    let Some(raw) = value.filter(|raw| kind(raw) != Kind::Null) else {
        return Vec::new();
    };
    if kind(raw) != Kind::Object {
        errors.report(path, "metadata must be an object");
        return Vec::new();
    }
    let (pairs, count) = raw::first_members(raw, MAX_METADATA_PAIRS);
    if count > MAX_METADATA_PAIRS {
        // Do not report on each of possibly thousands of keys: the count is the problem.
        errors.report(
            path,
            format_args!("metadata must have at most {MAX_METADATA_PAIRS} pairs, got {count}"),
        );
        return Vec::new();
    }
    let before = errors.reported();
    for (key, value) in &pairs {
        if key.trim().is_empty() {
            errors.report(path, "metadata keys should not be empty");
        } else if key.chars().count() > MAX_METADATA_KEY_CHARS {
            errors.report(
                path,
                format_args!("metadata keys must be at most {MAX_METADATA_KEY_CHARS} characters"),
            );
        }
        match kind(value) {
            Kind::Number => {}
            Kind::String => {
                if raw::string(value).chars().count() > MAX_VALUE_CHARS {
                    errors.report(
                        path.field(key),
                        format_args!(
                            "metadata values must be at most {MAX_VALUE_CHARS} characters"
                        ),
                    );
                }
            }
            _ => errors.report(
                path.field(key),
                "metadata values must be a string or a number",
            ),
        }
    }
    if errors.reported() > before {
        return Vec::new();
    }
    pairs
}

fn parse_custom_fields(
    item: &Path<'_>,
    value: Option<Raw<'_>>,
    errors: &mut Errors,
) -> Vec<CustomField> {
    let path = item.field("custom_fields");
    let Some(raw) = value.filter(|raw| kind(raw) != Kind::Null) else {
        return Vec::new();
    };
    if kind(raw) != Kind::Array {
        errors.report(path, "custom_fields must be an array");
        return Vec::new();
    }
    let (fields, count) = raw::first_elements(raw, MAX_CUSTOM_FIELDS);
    if count > MAX_CUSTOM_FIELDS {
        errors.report(
            path,
            format_args!(
                "custom_fields must have at most {MAX_CUSTOM_FIELDS} entries, got {count}"
            ),
        );
        return Vec::new();
    }
    let mut parsed_fields = Vec::with_capacity(fields.len());
    for (i, field) in fields.into_iter().enumerate() {
        let field_path = path.index(i);
        let Some(raw) = object(field_path, "custom field", Some(field), errors) else {
            continue;
        };
        let [internal_name, value] = raw::members(raw, ["internal_name", "value"]);
        let name = parsed(
            &field_path,
            "internal_name",
            internal_name,
            true,
            parse_internal_name,
            errors,
        );
        let value = parsed(
            &field_path,
            "value",
            value,
            true,
            parse_custom_value,
            errors,
        );
        if let (Some(internal_name), Some(value)) = (name, value) {
            parsed_fields.push(CustomField {
                internal_name,
                value,
            });
        }
    }
    parsed_fields
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
