//! Outbound HTTP to partner-supplied URLs (being written).
