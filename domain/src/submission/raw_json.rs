//! Values a partner sent outside the contract, kept as the JSON text they came as.
//!
//! Holding them as text keeps an accepted call's cost at its size: a tree of a 5 MiB array of
//! zeros takes some 30 bytes per zero, and would be built again for every copy. Readers that
//! want the value parse it ([`RawJson::to_value`]).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;

#[derive(Clone)]
pub struct RawJson(Box<RawValue>);

impl RawJson {
    pub(crate) fn new(raw: Box<RawValue>) -> Self {
        Self(raw)
    }

    /// The value's JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The value as a tree.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.get()).expect("kept values are well-formed and in range")
    }

    pub fn from_value(value: &Value) -> Self {
        Self(serde_json::value::to_raw_value(value).expect("a JSON tree always serialises"))
    }
}

/// Equal as JSON values: spacing, key order and number spelling do not matter (a value read
/// back from the database is not spelled as it was sent).
impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get() || self.to_value() == other.to_value()
    }
}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl Serialize for RawJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kept_text_is_written_as_is_and_read_back_from_a_tree() {
        let raw =
            RawJson::new(RawValue::from_string("{\"b\": [1, 2], \"a\": 1e2}".into()).unwrap());
        let wrapped = json!({"x": 1});
        let text = serde_json::to_string(&vec![raw.clone()]).unwrap();
        assert_eq!(text, "[{\"b\": [1, 2], \"a\": 1e2}]");
        // From a tree, as the event store hands payloads back.
        let stored = serde_json::to_value(&raw).unwrap();
        let back: RawJson = serde_json::from_value(stored).unwrap();
        assert_eq!(back, raw);
        assert_ne!(back, RawJson::from_value(&wrapped));
    }
}
