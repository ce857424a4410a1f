//! The one error type of the job runner and its steps.

/// Why a job's step could not be taken to a recorded outcome.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// Loading the call or appending its events failed.
    #[error("could not load or record on call {call}")]
    Store {
        call: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Another worker claimed the row after this claim's lease expired (or the row went away):
    /// nothing was recorded.
    #[error("the lease on call {call} is no longer held by this worker")]
    LeaseLost { call: String },
    /// The step stopped because its [`super::Cancel`] was requested.
    #[error("the step was cancelled")]
    Cancelled,
    /// Settings or partner data that make the step impossible (e.g. an unusable signing secret).
    #[error("{0}")]
    Unusable(String),
}

impl JobError {
    pub(crate) fn store(
        call: &str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        JobError::Store {
            call: call.to_owned(),
            source: Box::new(source),
        }
    }

    /// The step stopped without an outcome of its own (cancelled, or its lease was lost).
    pub fn is_cancellation(&self) -> bool {
        matches!(self, JobError::Cancelled | JobError::LeaseLost { .. })
    }
}
