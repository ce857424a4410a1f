//! Projections: read models and work queues kept from the event log.
//!
//! The event log is read in commit order from a durable checkpoint ([`event_log`]), one page
//! per transaction that also writes the read model and advances the checkpoint, so a crash at
//! any moment is resumed and never applies an event twice. Every projection can be rebuilt from
//! the events alone.

pub mod callback_deliveries;
pub mod event_log;
pub mod notifications;
pub mod opened;
pub mod parking;
pub mod processing_jobs;
pub mod projector;
pub mod read_models;
pub mod transcripts;

pub use event_log::StoredEvent;
pub use projector::{Projection, ProjectionError, Projector, RetryOutcome};

/// The names of [`all`], in the same order.
pub const NAMES: [&str; 4] = [
    "read_models",
    "processing_jobs",
    "callback_deliveries",
    "transcripts",
];

/// Every projection of the service, by name.
/// Those that show personal fields open them with `privacy`.
pub fn all(privacy: &callingest_privacy::Privacy) -> Vec<std::sync::Arc<dyn Projection>> {
    vec![
        std::sync::Arc::new(read_models::ReadModels(privacy.clone())),
        std::sync::Arc::new(processing_jobs::ProcessingJobs(privacy.clone())),
        std::sync::Arc::new(callback_deliveries::CallbackDeliveries),
        std::sync::Arc::new(transcripts::Transcripts(privacy.clone())),
    ]
}
