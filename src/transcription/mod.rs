//! Transcription of analysed calls: its own pool of workers claims the `transcribe` stage of
//! the `processing_job` queue, runs the configured speech-to-text engine and records the
//! transcript on the call, which then completes.

mod engine;
pub mod server;
pub mod spool;
mod worker;

pub use engine::build_engine;
pub use worker::{TranscriptionWorker, TranscriptionWorkerSettings};
