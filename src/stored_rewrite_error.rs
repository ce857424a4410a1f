//! The error of the two commands that rewrite stored personal data in place, `privacy
//! encrypt-existing` and `privacy rotate-master-key`: they read events and key rows, open and
//! seal them, and fail the same ways, so they share one type.

use callingest_privacy::{KeyringError, SealError};

#[derive(Debug, thiserror::Error)]
pub enum StoredRewriteError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    #[error(transparent)]
    Sealed(#[from] SealError),
    /// A stored event that does not decode, named as the command knows it (its position, or
    /// the call it belongs to).
    #[error("{0} does not decode")]
    Decode(String, #[source] serde_json::Error),
    /// A key row that the previous master key does not open (rotation only).
    #[error("the keys of {0} do not open with CALLINGEST_PREVIOUS_MASTER_KEY")]
    DoesNotOpen(String),
}
