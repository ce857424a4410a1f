//! A request to stop long work early, shared between the thread doing it and whoever decides
//! it is no longer wanted (a job runner whose lease was lost, a process shutting down).
//!
//! Decoding and resampling run on blocking threads that cannot be cancelled from outside, so
//! they look at this flag between packets instead.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Cheap to clone; every clone sees the same flag.
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    /// A flag nobody has raised yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every holder to stop; cannot be undone.
    pub fn request(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn requested(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// The flag itself, for callbacks that must read it through a raw pointer (whisper.cpp's
    /// abort callback). Valid as long as a clone of this `Stop` is alive.
    pub fn as_atomic(&self) -> &AtomicBool {
        &self.0
    }
}
