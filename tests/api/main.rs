//! End-to-end tests: the real service on 127.0.0.1 over a fresh PostgreSQL database per test.
//! Set `DATABASE_URL` to the server to use (default `postgres://postgres@127.0.0.1:5432/postgres`);
//! each test creates its own database there and drops it afterwards. How to write one:
//! `helpers/mod.rs`.

mod helpers;

/// reqwest is built without a crypto provider of its own (`rustls-no-provider`), so a plain
/// `reqwest::Client::new()` panics unless one is installed for the process. The service's own
/// clients bring theirs (`callingest::http_client`); the tests' clients find this one, installed
/// before any test starts so that no test has to remember it and none can race another to it.
#[ctor::ctor(unsafe)]
fn install_the_tls_crypto_provider() {
    // Only fails if one is installed already, which serves as well.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

mod callback_receiver;
mod callbacks;
mod contract_errors;
mod crash;
mod failover;
mod fair_claims;
mod fetch;
mod fleet;
mod fleet_rate_limit;
mod harness;
mod hostile_bodies;
mod hostile_recordings;
mod idempotency;
mod ingest;
mod interaction;
mod log_secrecy;
mod multi_host;
mod operations;
mod outage;
mod parking;
mod partners;
mod privacy;
mod privacy_keys;
mod processing;
mod read_side;
mod replica;
mod runner;
mod sdk;
mod startup;
mod support_page;
mod support_sign_in;
mod transcription;
