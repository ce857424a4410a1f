//! The callingest service: configuration, database, HTTP API and command line, wired around
//! the pure `callingest-domain` crate.

pub mod app;
pub mod callbacks;
pub mod cli;
pub mod config;
pub mod db;
pub mod encrypt_existing;
pub mod erasure;
pub mod error_chain;
pub mod event_store;
pub mod health;
pub mod http;
pub mod http_client;
pub mod ingest;
pub mod jobs;
pub mod key_rotation;
pub mod net;
pub mod partners;
pub mod process_metrics;
pub mod processing;
pub mod queries;
pub mod rebuild_progress;
pub mod stored_rewrite_error;
pub mod telemetry;
pub mod transcription;
