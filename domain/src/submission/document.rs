//! The first pass over a request body: checks that it is well-formed JSON and how it is
//! shaped, keeping only the raw text of the first [`MAX_CALLS_PER_BATCH`] items of `data` and
//! counting the rest. Nothing else is kept, whatever the size of the body.
//!
//! What is not kept is skipped at the JSON reader's full speed, its syntax checked but not its
//! nesting: it is never stored, and the body is refused for its shape or its count anyway.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserializer;

use super::raw::{Raw, StrSeed};
use super::MAX_CALLS_PER_BATCH;

/// What the body holds at the top.
pub(crate) enum Document<'de> {
    /// Not an object.
    NotObject,
    /// An object with no `data`, or `data: null`.
    NoData,
    /// `data` is not an array.
    DataNotArray,
    /// `data` is an array of `count` items, of which the first ones are kept.
    Items { kept: Vec<Raw<'de>>, count: usize },
}

/// Reads `body` in one pass; an error means it is not JSON (or nests too deep).
pub(crate) fn read(body: &[u8]) -> Result<Document<'_>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let document = de.deserialize_any(Top)?;
    de.end()?;
    Ok(document)
}

/// The value of the body.
struct Top;

impl<'de> Visitor<'de> for Top {
    type Value = Document<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON document")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut document = Document::NoData;
        while let Some(key) = map.next_key_seed(StrSeed)? {
            if key == "data" {
                // As in any JSON reader, a repeated key's last value wins.
                document = map.next_value_seed(Data)?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(document)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Document::NotObject)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Document::NotObject)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Document::NotObject)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Document::NotObject)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Document::NotObject)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Document::NotObject)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Document::NotObject)
    }
}

/// The value of `data` (inside the body object: its parent nests one level deep).
struct Data;

impl<'de> DeserializeSeed<'de> for Data {
    type Value = Document<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Data {
    type Value = Document<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut kept = Vec::new();
        let mut count = 0;
        loop {
            // The kept items are checked for nesting when they are validated; the others only
            // need to be well-formed and counted.
            let more = if kept.len() < MAX_CALLS_PER_BATCH {
                seq.next_element::<Raw<'de>>()?.map(|raw| kept.push(raw))
            } else {
                seq.next_element::<IgnoredAny>()?.map(drop)
            };
            if more.is_none() {
                return Ok(Document::Items { kept, count });
            }
            count += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_key_seed(StrSeed)?.is_some() {
            map.next_value::<IgnoredAny>()?;
        }
        Ok(Document::DataNotArray)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Document::NoData)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Document::DataNotArray)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Document::DataNotArray)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Document::DataNotArray)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Document::DataNotArray)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Document::DataNotArray)
    }
}
