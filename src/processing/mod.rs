//! Processing of accepted calls (being written).
pub mod fetch;
