//! Crypto-shredding of personal data in the event log.
//!
//! Every call gets two random data keys: the call key seals the customer's side of the call
//! (number, names, e-mails, recording URL, free-form fields, the transcript), the agent key the
//! agent's name and e-mail. The event log only ever holds their ciphertext. The keys live in
//! the `keyring` schema, wrapped by the master key from configuration; destroying a call's key
//! row erases those fields everywhere the log is kept, backups included.
//!
//! - [`keys`]: the master key, data keys, wrapping (AES-256-GCM).
//! - [`seal`]: an event's stored form and back — the one path every reader opens events through.
//! - [`blind`]: keyed blind indexes (HMAC-SHA256) that find a subject's calls without clear text.
//! - [`keyring`]: the key rows in PostgreSQL, and the master keys a start is given checked
//!   against `keyring.master_key` (each row records the version of the master key that wrapped
//!   it, so a rotation can re-wrap rows while the service runs).

pub mod blind;
pub mod keyring;
pub mod keys;
pub mod seal;

pub use keyring::{CallKeyRow, KeyringError};
pub use keys::{CallKeys, DataKey, MasterKey, Privacy, WrappedKeys};
pub use seal::SealError;
