//! Reads for the APIs and the CLI: the read models (`call`, `batch`) and, for audit views, a
//! call's event history. Nothing here writes, and nothing here knows HTTP: the views derive
//! serde (and sqlx), and the HTTP layer documents what they serialise to
//! (`crate::http::view_schema`, where every field is described for partners).

pub mod calls;
pub mod history;
pub mod interaction;
pub mod rfc3339;
pub mod transcripts;
