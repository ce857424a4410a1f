//! The harness itself (`helpers/`): the example of its module documentation runs as written,
//! and `drain()` fails, naming the work left, rather than returning while work is pending.

use std::time::Duration;

use callingest::config::Role;
use callingest_client::types::CallStatus;

use crate::helpers::recording_server::RecordingServer;
use crate::helpers::{batch, item, TestApp};

/// The example of `helpers/mod.rs`.
#[tokio::test]
async fn a_wav_recording_is_analysed() {
    // The service in this process on a fresh database, with one partner (`app.partner`).
    let app = TestApp::builder().role(Role::All).spawn().await;
    let recordings = RecordingServer::start().await;

    let accepted = app
        .submit(&batch(vec![item(
            "c1",
            &recordings.url("/files/left-only.wav"),
        )]))
        .await;
    // Projectors and workers run until nothing is left to do (or the test fails, saying what
    // was still pending).
    app.drain().await;

    assert_eq!(app.get_call("c1").await.status, CallStatus::Completed);
    let batch_id = accepted.batch_id.parse().expect("a batch id");
    assert_eq!(app.get_batch(batch_id).await.completed_count, 1);
}

#[tokio::test]
async fn a_drain_with_work_left_fails_and_names_it() {
    // The API alone: the accepted call is never projected, let alone fetched.
    let app = TestApp::spawn().await;
    app.submit(&batch(vec![item(
        "c1",
        "https://recordings.invalid/c1.wav",
    )]))
    .await;

    let drained = tokio::spawn(async move { app.drain_within(Duration::from_millis(200)).await });

    let failure = drained
        .await
        .expect_err("the drain returned with work left");
    let message = failure
        .into_panic()
        .downcast::<String>()
        .expect("a formatted panic message");
    for projection in [
        "read_models",
        "processing_jobs",
        "callback_deliveries",
        "transcripts",
    ] {
        assert!(
            message.contains(&format!("projection {projection} at nothing of")),
            "{message}"
        );
    }
    assert!(message.contains("role Api"), "{message}");
}
