//! Date-times as the published API writes them (`2024-05-01T12:00:00+00:00`, fractions only
//! when present), for `#[serde(serialize_with)]` on the fields of views: chrono's own serde
//! format differs (`Z`), and answers must not change with the way they are written.

use chrono::{DateTime, Utc};

pub fn serialize<S: serde::Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&at.to_rfc3339())
}

pub fn option<S: serde::Serializer>(at: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => serialize(at, s),
        None => s.serialize_none(),
    }
}
