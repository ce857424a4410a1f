//! The pure core of callingest: value types that parse, batch validation with field paths, and
//! the event-sourced `Batch` and `Call` aggregates. No IO happens in this crate.

pub mod batch;
pub mod call;
pub mod interaction;
pub mod personal;
pub mod submission;
pub mod values;
