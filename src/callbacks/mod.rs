//! Partner callbacks: the signed outcome of each call, delivered by a saga that records every
//! attempt on the call and keeps its schedule in the database.

mod sender;
pub mod signature;

pub use sender::{webhook_id, CallbackSender, CallbackSettings, MAX_ATTEMPTS};
