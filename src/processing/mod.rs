//! Processing of accepted calls: workers claim jobs from the `processing_job` queue (kept by
//! the `processing_jobs` projection), fetch the recording, identify and analyse it, and record
//! every step as events on the call.

pub mod fetch;
mod worker;

pub use worker::Worker;
