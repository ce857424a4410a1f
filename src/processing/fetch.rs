//! Fetching recordings (being written).
