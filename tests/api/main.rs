//! End-to-end tests: the real service on 127.0.0.1 over a fresh PostgreSQL database per test.
//! Set `DATABASE_URL` to the server to use (default `postgres://postgres@127.0.0.1:5432/postgres`);
//! each test creates its own database there and drops it afterwards. How to write one:
//! `helpers/mod.rs`.

mod helpers;

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
mod processing;
mod read_side;
mod replica;
mod runner;
mod sdk;
mod startup;
mod support_page;
mod support_sign_in;
mod transcription;
