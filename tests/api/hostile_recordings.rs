//! One partner's hostile recordings never stop another partner's calls: float WAVs holding NaN,
//! ±infinity, 1e20 and subnormals, a recording longer than the limit, and an event log that
//! already holds an analysis with `null` levels (written by the code before analytics were
//! always finite).

use std::collections::HashMap;
use std::time::Duration;

use callingest::config::{FetchConfig, Role};
use callingest::partners::{create_partner, PartnerCredentials};
use serde_json::{json, Value};

use crate::helpers::recording_server::{MemoryRecordings, FIXTURES};
use crate::helpers::{batch, item, json_body, test_workers, TestApp};

#[path = "../../audio/tests/hostile/mod.rs"]
mod hostile;

/// How long the other partner's normal call may take to show `completed`: it takes well under
/// a second here; the bound only has to hold on a loaded CI machine.
const WITHIN: Duration = Duration::from_secs(20);

/// Every hostile recording, plus `normal.wav` (the left-only fixture) for the other partner.
fn recordings() -> HashMap<String, Vec<u8>> {
    let mut files: HashMap<String, Vec<u8>> = hostile::all()
        .into_iter()
        .map(|h| (h.name.to_owned(), h.bytes))
        .collect();
    files.insert(
        "normal.wav".into(),
        std::fs::read(format!("{FIXTURES}/left-only.wav")).unwrap(),
    );
    files
}

async fn second_partner(app: &TestApp) -> PartnerCredentials {
    create_partner(&app.pool, "partner-b", Some("Partner B"), 600)
        .await
        .expect("partner created")
}

async fn submit(app: &TestApp, partner: &PartnerCredentials, items: Vec<Value>) -> Value {
    let response = app
        .batch_request_as(partner)
        .json(&batch(items))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    json_body(response).await
}

/// The call's processing outcomes: exactly one is allowed.
fn outcomes(events: &[(String, Value)]) -> Vec<&(String, Value)> {
    events
        .iter()
        .filter(|(t, _)| t == "ProcessingCompleted" || t == "ProcessingFailed")
        .collect()
}

#[tokio::test]
async fn hostile_float_recordings_end_once_and_never_hold_up_another_partners_call() {
    let app = TestApp::spawn_processing().await;
    let partner_b = second_partner(&app).await;
    let server = MemoryRecordings::start(recordings()).await;

    for (n, h) in hostile::all().into_iter().enumerate() {
        submit(&app, &app.partner, vec![item(h.name, &server.url(h.name))]).await;
        let normal = format!("normal-{n}");
        submit(
            &app,
            &partner_b,
            vec![item(&normal, &server.url("normal.wav"))],
        )
        .await;

        let row = app.finished_row_of("partner-b", &normal, WITHIN).await;
        assert_eq!(row["status"], "completed", "after {}: {row}", h.name);

        let row = app.finished_row_of("partner-a", h.name, WITHIN).await;
        let events = app.call_events("partner-a", h.name).await;
        let ends = outcomes(&events);
        assert_eq!(ends.len(), 1, "{}: {events:?}", h.name);
        match h.expected {
            hostile::Expected::Completes => {
                assert_eq!(row["status"], "completed", "{}: {row}", h.name);
                assert_eq!(ends[0].0, "ProcessingCompleted");
                let (_, analyzed) = events
                    .iter()
                    .find(|(t, _)| t == "RecordingAnalyzed")
                    .expect("analysed");
                for figure in ["silence_ratio", "mean_dbfs", "peak_dbfs", "clipping_ratio"] {
                    // A JSON number is finite; a non-finite one would have been stored as null.
                    assert!(
                        analyzed["RecordingAnalyzed"][figure].is_number(),
                        "{}: {figure} in {analyzed}",
                        h.name
                    );
                    assert!(row[figure].is_number(), "{}: {figure} in {row}", h.name);
                }
            }
            hostile::Expected::InvalidSamples => {
                assert_eq!(row["status"], "failed", "{}: {row}", h.name);
                assert_eq!(ends[0].0, "ProcessingFailed");
                let reason = ends[0].1["ProcessingFailed"]["reason"].as_str().unwrap();
                assert!(
                    reason.starts_with("recording holds invalid samples"),
                    "{}: {reason}",
                    h.name
                );
                assert_eq!(row["error"], reason);
            }
        }
    }
    let nulls: i64 = sqlx::query_scalar(
        "select count(*) from events where event_type = 'RecordingAnalyzed'
         and (payload->'RecordingAnalyzed'->'mean_dbfs' = 'null'::jsonb
              or payload->'RecordingAnalyzed'->'peak_dbfs' = 'null'::jsonb)",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(nulls, 0, "no analysis event was stored with a null level");
}

/// A 61-second 8 kHz 8-bit mono WAV of a quiet tone.
fn wav_of_61_seconds() -> Vec<u8> {
    let rate = 8_000u32;
    let data: Vec<u8> = (0..rate * 61)
        .map(|i| (128.0 + 20.0 * (i as f32 * 0.3).sin()) as u8)
        .collect();
    callingest_audio::wav::wav(1, 1, rate, 8, &data)
}

#[tokio::test]
async fn a_recording_longer_than_the_limit_fails_for_good_with_the_reason() {
    // The default is 600 minutes (checked below); an hour-long recording per test run would
    // only make the suite slow, so this service allows one minute.
    assert_eq!(
        FetchConfig::default().max_recording,
        Duration::from_secs(600 * 60)
    );
    let mut processing = test_workers();
    processing.fetch.max_recording = Duration::from_secs(60);
    let app = TestApp::builder()
        .role(Role::All)
        .workers(processing)
        .spawn()
        .await;
    let partner_b = second_partner(&app).await;
    let mut files = recordings();
    files.insert("long.wav".into(), wav_of_61_seconds());
    let server = MemoryRecordings::start(files).await;

    submit(
        &app,
        &app.partner,
        vec![item("long", &server.url("long.wav"))],
    )
    .await;
    submit(
        &app,
        &partner_b,
        vec![item("normal", &server.url("normal.wav"))],
    )
    .await;

    let row = app.finished_row_of("partner-b", "normal", WITHIN).await;
    assert_eq!(row["status"], "completed", "{row}");
    let row = app.finished_row_of("partner-a", "long", WITHIN).await;
    assert_eq!(row["status"], "failed", "{row}");
    assert_eq!(row["error"], "recording longer than 1 minute");
    assert_eq!(row["fetch_attempts"], 1, "a permanent failure: {row}");
    let events = app.call_events("partner-a", "long").await;
    assert_eq!(outcomes(&events).len(), 1, "{events:?}");
    assert!(
        !events.iter().any(|(t, _)| t == "RecordingAnalyzed"),
        "nothing measured: {events:?}"
    );
}

#[tokio::test]
async fn a_log_holding_an_analysis_with_null_levels_catches_up_and_the_call_loads() {
    // The API alone first: the call is accepted by the real code and nothing processes it.
    let app = TestApp::spawn().await;
    let mut legacy = item("legacy", "http://127.0.0.1:9/never-fetched.wav");
    legacy["metadata"] = json!({"campaign": "old"});
    submit(&app, &app.partner, vec![legacy.clone()]).await;

    // What the code before finite analytics wrote for a +inf recording: the infinite levels
    // went into the log as null, then the call completed.
    let analysed = json!({"RecordingAnalyzed": {
        "duration_ms": 1000, "sample_rate": 8000, "channels": 1, "codec": "pcm_f32le",
        "agent_talk_ms": 0, "customer_talk_ms": null, "silence_ratio": 1.0,
        "longest_silence_ms": 1000, "overlap_ms": 0, "mean_dbfs": null, "peak_dbfs": null,
        "clipping_ratio": 1.0, "analyzed_at": "2026-11-30T10:00:03Z", "transcription_due": false
    }});
    let old_events = [
        (
            "RecordingFetchStarted",
            json!({"RecordingFetchStarted": {"attempt": 1, "started_at": "2026-11-30T10:00:01Z"}}),
        ),
        (
            "RecordingFetched",
            json!({"RecordingFetched": {
                "attempt": 1, "bytes": 32044, "sha256": "ab".repeat(32),
                "content_type": "audio/wav", "format": "wav",
                "fetched_at": "2026-11-30T10:00:02Z"
            }}),
        ),
        ("RecordingAnalyzed", analysed),
        (
            "ProcessingCompleted",
            json!({"ProcessingCompleted": {
                "completed_at": "2026-11-30T10:00:03Z", "callback_due": false,
                "processing_time_ms": 3000,
                "results": {"transcription_available": false, "analytics_available": true,
                            "duration_ms": 1000, "agent_talk_ms": 0, "customer_talk_ms": null,
                            "silence_ratio": 1.0}
            }}),
        ),
    ];
    for (sequence, (event_type, payload)) in (2i64..).zip(old_events) {
        sqlx::query(
            "insert into events
                 (aggregate_type, aggregate_id, sequence, event_type, event_version, payload,
                  metadata)
             values ('Call', 'partner-a:legacy', $1, $2, '1', $3, '{}'::jsonb)",
        )
        .bind(sequence)
        .bind(event_type)
        .bind(payload)
        .execute(&app.pool)
        .await
        .unwrap();
    }

    // Now the whole service starts on that log.
    let app = app.restart_as(Role::All).await;
    let partner_b = second_partner(&app).await;
    let server = MemoryRecordings::start(recordings()).await;

    let row = app.finished_row_of("partner-a", "legacy", WITHIN).await;
    assert_eq!(row["status"], "completed", "{row}");
    assert!(
        row["mean_dbfs"].is_null() && row["peak_dbfs"].is_null(),
        "{row}"
    );
    assert_eq!(row["clipping_ratio"], 1.0);

    // The partner API shows it, with unknown levels, and its history.
    let call = app
        .client
        .get(app.url("/api/v1/partner/calls/legacy"))
        .header("x-partner-id", &app.partner.partner_id)
        .header("x-api-key", &app.partner.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(call.status(), 200);
    let call = json_body(call).await;
    assert_eq!(call["status"], "completed");
    assert!(
        call["mean_dbfs"].is_null() && call["peak_dbfs"].is_null(),
        "{call}"
    );
    assert_eq!(app.get_call_events("legacy").await.events.len(), 5);

    // The aggregate loads: alone (one command) and beside a new call (the batch append).
    let alone = submit(&app, &app.partner, vec![legacy.clone()]).await;
    assert_eq!(alone["calls"][0]["status"], "duplicate", "{alone}");
    let fresh = item("fresh", &server.url("normal.wav"));
    let both = submit(&app, &app.partner, vec![legacy, fresh]).await;
    assert_eq!(both["calls"][0]["status"], "duplicate", "{both}");
    assert_eq!(both["calls"][1]["status"], "accepted", "{both}");

    // And everyone's later calls go through.
    submit(
        &app,
        &partner_b,
        vec![item("after", &server.url("normal.wav"))],
    )
    .await;
    let row = app.finished_row_of("partner-b", "after", WITHIN).await;
    assert_eq!(row["status"], "completed", "{row}");
    let row = app.finished_row_of("partner-a", "fresh", WITHIN).await;
    assert_eq!(row["status"], "completed", "{row}");
    let legacy_events = app.call_events("partner-a", "legacy").await;
    assert_eq!(
        legacy_events
            .iter()
            .filter(|(t, _)| t == "DuplicateSubmissionReceived")
            .count(),
        2
    );
    assert_eq!(outcomes(&legacy_events).len(), 1, "never processed again");
}
