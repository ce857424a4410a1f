//! Reading pieces of a JSON document that is already known to be well-formed, without building
//! a tree of it: values stay raw JSON text borrowed from the body until a rule needs them.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserializer;
use serde_json::value::RawValue;
use serde_json::Value;

use super::{ExtraFields, RawJson};

/// A value's JSON text, borrowed from the request body.
pub(crate) type Raw<'de> = &'de RawValue;

/// What a raw value is, told by its first character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

pub(crate) fn kind(raw: Raw<'_>) -> Kind {
    match raw.get().as_bytes().first() {
        Some(b'n') => Kind::Null,
        Some(b't' | b'f') => Kind::Bool,
        Some(b'"') => Kind::String,
        Some(b'[') => Kind::Array,
        Some(b'{') => Kind::Object,
        _ => Kind::Number,
    }
}

/// A key or string: borrowed from the body when it holds no escapes, else unescaped.
pub(crate) struct StrSeed;

impl<'de> DeserializeSeed<'de> for StrSeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for StrSeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// The text of a raw string value (which must be of [`Kind::String`]).
pub(crate) fn string(raw: Raw<'_>) -> Cow<'_, str> {
    let mut de = serde_json::Deserializer::from_str(raw.get());
    StrSeed
        .deserialize(&mut de)
        .expect("a raw string value was checked well-formed")
}

/// The members named in `names` of a raw object (the last one wins if a name repeats, as in
/// any JSON reader), every other member skipped.
pub(crate) fn members<'de, const N: usize>(
    raw: Raw<'de>,
    names: [&'static str; N],
) -> [Option<Raw<'de>>; N] {
    struct Members<const N: usize>([&'static str; N]);

    impl<'de, const N: usize> Visitor<'de> for Members<N> {
        type Value = [Option<Raw<'de>>; N];

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = [None; N];
            while let Some(key) = map.next_key_seed(StrSeed)? {
                match self.0.iter().position(|name| *name == key) {
                    Some(slot) => found[slot] = Some(map.next_value::<Raw<'de>>()?),
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(found)
        }
    }

    let mut de = serde_json::Deserializer::from_str(raw.get());
    de.deserialize_map(Members(names))
        .expect("a raw object value was checked well-formed")
}

/// The first `keep` members of a raw object in document order, and how many it has in all.
pub(crate) fn first_members(raw: Raw<'_>, keep: usize) -> (Vec<(Cow<'_, str>, Raw<'_>)>, usize) {
    struct FirstMembers(usize);

    impl<'de> Visitor<'de> for FirstMembers {
        type Value = (Vec<(Cow<'de, str>, Raw<'de>)>, usize);

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let (mut kept, mut count) = (Vec::new(), 0);
            while let Some(key) = map.next_key_seed(StrSeed)? {
                if kept.len() < self.0 {
                    kept.push((key, map.next_value::<Raw<'de>>()?));
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
                count += 1;
            }
            Ok((kept, count))
        }
    }

    let mut de = serde_json::Deserializer::from_str(raw.get());
    de.deserialize_map(FirstMembers(keep))
        .expect("a raw object value was checked well-formed")
}

/// The first `keep` elements of a raw array, and how many it has in all.
pub(crate) fn first_elements(raw: Raw<'_>, keep: usize) -> (Vec<Raw<'_>>, usize) {
    struct FirstElements(usize);

    impl<'de> Visitor<'de> for FirstElements {
        type Value = (Vec<Raw<'de>>, usize);

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an array")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let (mut kept, mut count) = (Vec::new(), 0);
            loop {
                let more = if kept.len() < self.0 {
                    seq.next_element::<Raw<'de>>()?.map(|raw| kept.push(raw))
                } else {
                    seq.next_element::<IgnoredAny>()?.map(drop)
                };
                if more.is_none() {
                    return Ok((kept, count));
                }
                count += 1;
            }
        }
    }

    let mut de = serde_json::Deserializer::from_str(raw.get());
    de.deserialize_seq(FirstElements(keep))
        .expect("a raw array value was checked well-formed")
}

/// The members of a raw object whose names are not in `known`, as the JSON text they came as:
/// what a valid call keeps of the fields nobody asked for (a repeated name's last value wins).
pub(crate) fn other_members(
    raw: Raw<'_>,
    known: &[&str],
) -> Result<ExtraFields, serde_json::Error> {
    struct OtherMembers<'k>(&'k [&'k str]);

    impl<'de> Visitor<'de> for OtherMembers<'_> {
        type Value = ExtraFields;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut others = ExtraFields::new();
            while let Some(key) = map.next_key_seed(StrSeed)? {
                if self.0.contains(&key.as_ref()) {
                    map.next_value::<IgnoredAny>()?;
                } else {
                    let value = map.next_value::<Raw<'de>>()?;
                    others.insert(key.into_owned(), RawJson::new(value.to_owned()));
                }
            }
            Ok(others)
        }
    }

    let mut de = serde_json::Deserializer::from_str(raw.get());
    de.deserialize_map(OtherMembers(known))
}

/// A raw value as a JSON tree (for small values only: metadata values). Fails only on a number
/// out of the range of a double, which [`super::scan`] refuses before.
pub(crate) fn tree(raw: Raw<'_>) -> Result<Value, serde_json::Error> {
    serde_json::from_str(raw.get())
}
