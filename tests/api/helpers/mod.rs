//! The test harness of the `api` tests: everything a test needs besides its own scenario.
//!
//! # Writing a test
//!
//! A whole test, as in `tests/api/harness.rs`:
//!
//! ```ignore
//! #[tokio::test]
//! async fn a_wav_recording_is_analysed() {
//!     // The service in this process on a fresh database, with one partner (`app.partner`).
//!     let app = TestApp::builder().role(Role::All).spawn().await;
//!     let recordings = RecordingServer::start().await;
//!
//!     let accepted = app
//!         .submit(&batch(vec![item("c1", &recordings.url("/files/left-only.wav"))]))
//!         .await;
//!     // Projectors and workers run until nothing is left to do (or the test fails, saying
//!     // what was still pending).
//!     app.drain().await;
//!
//!     assert_eq!(app.get_call("c1").await.status, CallStatus::Completed);
//!     let batch_id = accepted.batch_id.parse().expect("a batch id");
//!     assert_eq!(app.get_batch(batch_id).await.completed_count, 1);
//! }
//! ```
//!
//! - [`TestApp::builder`] starts the service; every setting has a default (API only, test
//!   worker settings), so a test names only what it is about: `.role(Role::All)`,
//!   `.rate_limit(..)`, `.workers(..)`, `.transcriber(..)`, `.http(..)`, `.server_url(..)`,
//!   `.read_from_itself()`. [`TestDatabase`] alone is a database for a test that starts the
//!   binary itself ([`instances::Instance`]).
//! - Requests: [`endpoints`] has one typed helper per endpoint a test usually reads
//!   (`app.get_call(..)`, `app.get_batch(..)`, ...), the generated client with credentials
//!   (`app.partner_api()`, `app.admin_api()`) for the rest, and raw requests
//!   (`app.batch_request()`, `app.client`) for tests about statuses, headers and bad input.
//! - Waiting: [`TestApp::drain`] when the service should finish its work; [`wait_until`] /
//!   [`wait_for`] for what happens by the clock or outside the service (a backoff, an expiring
//!   lease, a request reaching a test server). No `loop { sleep }` in tests.
//! - Fixtures: [`recording_server`] (audio fixtures and misbehaving hosts),
//!   [`callback_receiver`] (HTTPS partner endpoint with its own CA), [`speech_clips`] (speech
//!   of known text, whisper model), [`scripted_call`] (stereo calls with known turns),
//!   [`instances`] (the real binary in its own process).

pub mod app;
pub mod callback_receiver;
pub mod calls;
pub mod database;
pub mod drain;
pub mod endpoints;
pub mod instances;
pub mod projectors;
pub mod recording_server;

/// Stereo calls with a known script of turns (espeak-ng): shared with the audio crate's
/// accuracy test.
#[path = "../../../audio/tests/scripted_call/mod.rs"]
pub mod scripted_call;

/// Speech with known text (espeak-ng), WAV writing and the model: shared with the transcribe
/// crate's own tests.
#[cfg(feature = "whisper")]
#[path = "../../../transcribe/tests/common/mod.rs"]
pub mod speech_clips;

pub use app::{test_privacy, test_workers, TestApp, ADMIN_TOKEN, TEST_MASTER_KEY};
pub use calls::{
    as_analyst, assert_each_call_logged_processed_and_called_back_once, batch, item, item_with_id,
    json_body, published_item,
};
pub use database::{server_url, TestDatabase};
pub use drain::{wait_for, wait_until};
pub use endpoints::BATCH_PATH;

/// The bound of a wait that has no reason for another: long enough for a loaded machine.
pub const DEFAULT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Held by the tests that measure time or throughput with several real processes (the
/// `#[ignore]`d ones, run by `scripts/test --test api -- --ignored`), so that they run one at a
/// time even though cargo runs tests in parallel. A tokio mutex: a failed test does not poison
/// it for the next.
pub async fn run_alone() -> tokio::sync::MutexGuard<'static, ()> {
    static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    ALONE.lock().await
}
