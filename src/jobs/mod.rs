//! Jobs of the worker pools: claiming them.

pub mod claim;
