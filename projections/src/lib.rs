//! Projections: read models and work queues kept from the event log.
//!
//! The event log is read in commit order from a durable checkpoint ([`event_log`]), one page
//! per transaction that also writes the read model and advances the checkpoint, so a crash at
//! any moment is resumed and never applies an event twice. Every projection can be rebuilt from
//! the events alone.

pub mod callback_deliveries;
pub mod event_log;
pub mod notifications;
pub mod parking;
pub mod processing_jobs;
pub mod projector;
pub mod read_models;
pub mod transcripts;

pub use event_log::StoredEvent;
pub use projector::{Projection, ProjectionError, Projector, RetryOutcome};

/// Every projection of the service, by name.
pub fn all() -> Vec<std::sync::Arc<dyn Projection>> {
    vec![
        std::sync::Arc::new(read_models::ReadModels),
        std::sync::Arc::new(processing_jobs::ProcessingJobs),
        std::sync::Arc::new(callback_deliveries::CallbackDeliveries),
        std::sync::Arc::new(transcripts::Transcripts),
    ]
}
