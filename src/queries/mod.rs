//! Reads for the APIs and the CLI: the read models (`call`, `batch`) and, for audit views, a
//! call's event history. Nothing here writes.

pub mod calls;
pub mod history;
pub mod interaction;
pub mod transcripts;
