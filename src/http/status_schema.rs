//! The OpenAPI schema of the call view's status enums `callback_status` and
//! `transcription_status`: strings with their values listed, inline.
//!
//! Inline rather than poem-openapi's `Enum` derive: a nullable field of a derived enum is
//! written `allOf: [{$ref}, {nullable: true}]`, which openapi-python-client cannot read (it drops
//! the whole `CallView`). An inline `{type: string, enum: [...], nullable: true}` every
//! generator reads. On the wire the values are the same strings as before. Both are only ever
//! fields of `Option` type, hence `null` among the values.

use std::borrow::Cow;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
use serde_json::Value;

use crate::queries::calls::{CallbackStatus, TranscriptionStatus};

macro_rules! inline_string_enum {
    ($type:ty, $name:literal, $description:literal) => {
        impl Type for $type {
            const IS_REQUIRED: bool = true;
            type RawValueType = Self;
            type RawElementValueType = Self;

            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }

            fn schema_ref() -> MetaSchemaRef {
                MetaSchemaRef::Inline(Box::new(MetaSchema {
                    description: Some($description),
                    // `null` listed too: OpenAPI 3.0 says `nullable` does not add it to an
                    // `enum`, and generators (openapi-python-client) follow that.
                    enum_items: <$type>::ALL
                        .iter()
                        .map(|value| Value::from(value.as_str()))
                        .chain([Value::Null])
                        .collect(),
                    ..MetaSchema::new("string")
                }))
            }

            fn as_raw_value(&self) -> Option<&Self> {
                Some(self)
            }

            fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
                Box::new(std::iter::once(self))
            }
        }

        impl ToJSON for $type {
            fn to_json(&self) -> Option<Value> {
                Some(Value::from(self.as_str()))
            }
        }

        impl ParseFromJSON for $type {
            fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
                let value = value.unwrap_or_default();
                <$type>::ALL
                    .into_iter()
                    .find(|known| value.as_str() == Some(known.as_str()))
                    .ok_or_else(|| ParseError::expected_type(value))
            }
        }
    };
}

inline_string_enum!(
    CallbackStatus,
    "CallbackStatus",
    "Where the callback is: `pending` (an attempt is due), `delivered` (the callback URL \
     answered 2xx) or `abandoned` (every attempt failed); null without a `callback_url`."
);

inline_string_enum!(
    TranscriptionStatus,
    "TranscriptionStatus",
    "Where the transcript is: `pending` (waiting for a worker, also between attempts), \
     `transcribing`, `available` (see `/calls/{call_id}/transcript`) or `unavailable` \
     (transcription failed; the call completed without one); null when no transcript was due."
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_written_and_read_as_their_strings() {
        for status in CallbackStatus::ALL {
            let json = status.to_json().unwrap();
            assert_eq!(json, serde_json::to_value(status).unwrap());
            assert_eq!(
                CallbackStatus::parse_from_json(Some(json)).ok(),
                Some(status)
            );
        }
        for status in TranscriptionStatus::ALL {
            let json = status.to_json().unwrap();
            assert_eq!(json, serde_json::to_value(status).unwrap());
            assert_eq!(
                TranscriptionStatus::parse_from_json(Some(json)).ok(),
                Some(status)
            );
        }
        assert!(CallbackStatus::parse_from_json(Some(Value::from("lost"))).is_err());
    }
}
