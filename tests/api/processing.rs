//! Processing end to end: a real recording server on 127.0.0.1 serving real audio files, the
//! projectors and workers of the service, and the events and read models they leave.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use callingest::config::Role;
use callingest::jobs::JobOutcome;
use callingest_projections::callback_deliveries::CallbackDeliveries;
use callingest_projections::processing_jobs::ProcessingJobs;
use callingest_projections::read_models::ReadModels;
use callingest_projections::{Projection, Projector};
use serde_json::{json, Value};

use crate::helpers::projectors::{catch_up_to_the_end, catch_up_until, fetch_runner};
use crate::helpers::recording_server::{RecordingServer, FIXTURES};
use crate::helpers::{batch, item, item_with_id, test_workers, wait_until, TestApp};

async fn processing_app() -> TestApp {
    TestApp::spawn_processing().await
}

#[tokio::test]
async fn a_stereo_wav_with_speech_on_the_left_only_has_no_customer_talk() {
    let app = processing_app().await;
    let server = RecordingServer::start().await;
    let url = server.url("/files/left-only.wav");
    assert_eq!(
        app.post_batch(&batch(vec![item("c1", &url)]))
            .await
            .status(),
        200
    );

    let row = app.final_row("c1").await;

    assert_eq!(row["status"], "completed", "{row}");
    assert_eq!(row["recording_format"], "wav");
    assert_eq!(row["channels"], 2);
    assert_eq!(row["customer_talk_ms"], 0);
    let agent = row["agent_talk_ms"].as_i64().unwrap();
    assert!((1_900..=2_100).contains(&agent), "agent talk {agent}");
    assert_eq!(row["recording_duration_ms"], 4_000);
    assert_eq!(
        app.event_types("c1").await,
        [
            "CallAccepted",
            "RecordingFetchStarted",
            "RecordingFetched",
            "RecordingAnalyzed",
            "ProcessingCompleted"
        ]
    );
    let events = app.call_events("partner-a", "c1").await;
    let fetched = &events[2].1["RecordingFetched"];
    let expected_sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(
            std::fs::read(format!("{FIXTURES}/left-only.wav")).unwrap(),
        ))
    };
    assert_eq!(fetched["sha256"], expected_sha.as_str());
    assert_eq!(events[3].1["RecordingAnalyzed"]["customer_talk_ms"], 0);
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("callingest_projection_lag_events{projection=\"read_models\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn every_supported_format_is_identified_and_analysed() {
    let app = processing_app().await;
    let server = RecordingServer::start().await;
    let files = [
        ("mono.mp3", "mp3", 1),
        ("stereo.mp3", "mp3", 2),
        ("left-only.aac", "aac", 2),
        ("mono.m4a", "m4a", 1),
        ("overlap.mp4", "mp4", 2),
    ];
    let items = files
        .iter()
        .map(|(file, _, _)| item(file, &server.url(&format!("/files/{file}"))))
        .collect();
    assert_eq!(app.post_batch(&batch(items)).await.status(), 200);

    for (file, format, channels) in files {
        let row = app.final_row(file).await;
        assert_eq!(row["status"], "completed", "{file}: {row}");
        assert_eq!(row["recording_format"], format, "{file}");
        assert_eq!(row["channels"], channels, "{file}");
        // A mono recording has no customer channel.
        assert_eq!(row["customer_talk_ms"].is_null(), channels == 1, "{file}");
    }
    let batch_row: Value = sqlx::query_scalar("select to_jsonb(b) from batch b")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(batch_row["completed_count"], 5);
    assert_eq!(batch_row["accepted_count"], 0);
}

#[tokio::test]
async fn a_missing_recording_fails_at_once() {
    let app = processing_app().await;
    let server = RecordingServer::start().await;
    app.post_batch(&batch(vec![item(
        "gone",
        &server.url("/files/no-such-file.mp3"),
    )]))
    .await;

    let row = app.final_row("gone").await;

    assert_eq!(row["status"], "failed");
    assert!(row["error"].as_str().unwrap().contains("404"), "{row}");
    assert_eq!(row["fetch_attempts"], 1);
    assert_eq!(
        app.event_types("gone").await,
        [
            "CallAccepted",
            "RecordingFetchStarted",
            "RecordingFetchFailed",
            "ProcessingFailed"
        ]
    );
    let events = app.call_events("partner-a", "gone").await;
    assert_eq!(events[2].1["RecordingFetchFailed"]["retryable"], false);
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_until_the_recording_comes() {
    let app = processing_app().await;
    let server = RecordingServer::start().await;
    app.post_batch(&batch(vec![item(
        "flaky",
        &server.url("/flaky/left-only.wav"),
    )]))
    .await;

    let row = app.final_row("flaky").await;

    assert_eq!(row["status"], "completed", "{row}");
    assert_eq!(row["fetch_attempts"], 3);
    assert_eq!(
        app.event_types("flaky").await,
        [
            "CallAccepted",
            "RecordingFetchStarted",
            "RecordingFetchFailed",
            "RecordingFetchStarted",
            "RecordingFetchFailed",
            "RecordingFetchStarted",
            "RecordingFetched",
            "RecordingAnalyzed",
            "ProcessingCompleted"
        ]
    );
    let events = app.call_events("partner-a", "flaky").await;
    let first = &events[2].1["RecordingFetchFailed"];
    assert_eq!(first["retryable"], true);
    let failed_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(first["failed_at"].clone()).unwrap();
    let next: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(first["next_attempt_at"].clone()).unwrap();
    assert_eq!(
        (next - failed_at).num_milliseconds(),
        100,
        "first retry waits the base"
    );
    let second = &events[4].1["RecordingFetchFailed"];
    let failed_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(second["failed_at"].clone()).unwrap();
    let next: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(second["next_attempt_at"].clone()).unwrap();
    assert_eq!(
        (next - failed_at).num_milliseconds(),
        200,
        "second retry waits twice the base"
    );
}

#[tokio::test]
async fn a_server_too_slow_for_the_timeout_fails_after_the_last_attempt() {
    let mut processing = test_workers();
    processing.fetch.timeout = Duration::from_millis(300);
    processing.fetch.max_attempts = 2;
    let app = TestApp::builder()
        .role(Role::All)
        .workers(processing)
        .spawn()
        .await;
    let server = RecordingServer::start().await;
    app.post_batch(&batch(vec![item("slow", &server.url("/slow.wav"))]))
        .await;

    let row = app.final_row("slow").await;

    assert_eq!(row["status"], "failed");
    assert_eq!(row["fetch_attempts"], 2);
    let events = app.call_events("partner-a", "slow").await;
    let failures: Vec<&Value> = events
        .iter()
        .filter(|e| e.0 == "RecordingFetchFailed")
        .map(|e| &e.1)
        .collect();
    assert_eq!(failures.len(), 2);
    assert!(failures
        .iter()
        .all(|f| f["RecordingFetchFailed"]["retryable"] == true));
    assert!(failures[1]["RecordingFetchFailed"]["next_attempt_at"].is_null());
}

#[tokio::test]
async fn an_oversize_recording_fails_without_retry() {
    let mut processing = test_workers();
    processing.fetch.max_recording_bytes = 100_000;
    let app = TestApp::builder()
        .role(Role::All)
        .workers(processing)
        .spawn()
        .await;
    let server = RecordingServer::start().await;
    app.post_batch(&batch(vec![item("big", &server.url("/big.wav"))]))
        .await;

    let row = app.final_row("big").await;

    assert_eq!(row["status"], "failed");
    assert_eq!(row["fetch_attempts"], 1);
    assert!(
        row["error"].as_str().unwrap().contains("larger than"),
        "{row}"
    );
}

#[tokio::test]
async fn a_pdf_named_mp3_is_an_unsupported_recording_format() {
    let app = processing_app().await;
    let server = RecordingServer::start().await;
    app.post_batch(&batch(vec![item(
        "pdf",
        &server.url("/files/not-audio.mp3"),
    )]))
    .await;

    let row = app.final_row("pdf").await;

    assert_eq!(row["status"], "failed");
    assert_eq!(row["error"], "unsupported recording format");
    assert_eq!(
        app.event_types("pdf").await,
        [
            "CallAccepted",
            "RecordingFetchStarted",
            "RecordingFetched",
            "ProcessingFailed"
        ]
    );
}

#[tokio::test]
async fn a_loopback_recording_url_is_refused_when_private_urls_are_not_allowed() {
    let mut processing = test_workers();
    processing.outbound.allow_private_urls = false;
    let app = TestApp::builder()
        .role(Role::All)
        .workers(processing)
        .spawn()
        .await;
    let server = RecordingServer::start().await;
    app.post_batch(&batch(vec![item("ssrf", &server.url("/redirect.wav"))]))
        .await;

    let row = app.final_row("ssrf").await;

    assert_eq!(row["status"], "failed");
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        0,
        "the loopback server was contacted"
    );
    assert_eq!(row["fetch_attempts"], 1);
}

#[tokio::test]
async fn a_worker_killed_mid_job_leaves_it_to_another_that_completes_it_once() {
    // The API alone; the projector and workers are driven by hand.
    let app = TestApp::spawn().await;
    let server = RecordingServer::start().await;
    app.post_batch(&batch(vec![item(
        "killed",
        &server.url("/hang-once/left-only.wav"),
    )]))
    .await;
    let jobs = Projector::new(
        app.pool.clone(),
        Arc::new(ProcessingJobs(app.privacy.clone())),
    );
    catch_up_until(&jobs, &app, "select count(*) from processing_job", 1).await;

    // The default lease (30 s): the killed worker's claim runs out, then another takes it.
    let processing = test_workers();
    let retry = callingest_domain::call::RetryPolicy {
        max_attempts: 5,
        backoff_base_ms: 10,
    };
    let doomed = fetch_runner(&app, &processing, retry);
    // Kill it while it waits for the recording: its job stays leased to it.
    let killed_at = Instant::now();
    let killed = tokio::time::timeout(Duration::from_millis(500), doomed.run_next("doomed")).await;
    assert!(
        killed.is_err(),
        "the doomed worker finished instead of hanging"
    );
    drop(doomed);
    let owner: Option<String> = sqlx::query_scalar("select lease_owner from processing_job")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(owner.as_deref(), Some("doomed"));

    let survivor = fetch_runner(&app, &processing, retry);
    // The survivor tries by the clock until the lease expires and it takes the job over.
    let taken_over_after = std::cell::Cell::new(None);
    let (app_ref, jobs_ref, survivor_ref, taken) = (&app, &jobs, &survivor, &taken_over_after);
    wait_until(
        "the job of the killed worker to be completed",
        Duration::from_secs(60),
        || async move {
            if app_ref
                .call_events("partner-a", "killed")
                .await
                .iter()
                .any(|e| e.0 == "ProcessingCompleted")
            {
                return true;
            }
            jobs_ref.catch_up().await.unwrap();
            let outcome = survivor_ref.run_next("survivor").await.unwrap();
            if outcome == JobOutcome::Processed && taken.get().is_none() {
                taken.set(Some(killed_at.elapsed()));
            }
            false
        },
    )
    .await;
    // Within one lease (plus the polling of this loop) of the kill, not before it expired.
    let taken_over_after = taken_over_after
        .get()
        .expect("the survivor claimed the job");
    assert!(
        taken_over_after >= processing.jobs.lease - Duration::from_millis(500)
            && taken_over_after < processing.jobs.lease + Duration::from_secs(3),
        "taken over after {taken_over_after:?}"
    );
    catch_up_until(&jobs, &app, "select count(*) from processing_job", 0).await;

    let types = app.event_types("killed").await;
    assert_eq!(
        types
            .iter()
            .filter(|t| *t == "RecordingFetchStarted")
            .count(),
        2,
        "{types:?}"
    );
    assert_eq!(
        types.iter().filter(|t| *t == "ProcessingCompleted").count(),
        1
    );
    assert_eq!(types.iter().filter(|t| *t == "ProcessingFailed").count(), 0);
    // Nothing is left to do, and doing nothing records nothing.
    assert_eq!(
        survivor.run_next("survivor").await.unwrap(),
        JobOutcome::EmptyQueue
    );
    let count: i64 = sqlx::query_scalar("select count(*) from processing_job")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

async fn table_rows(app: &TestApp, table: &str) -> Vec<Value> {
    sqlx::query_scalar(&format!(
        "select to_jsonb(t) from {table} t order by to_jsonb(t)::text"
    ))
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn rebuilding_each_projection_gives_the_same_rows_as_the_live_tables() {
    let app = processing_app().await;
    let server = RecordingServer::start().await;
    let items = vec![
        item("ok", &server.url("/files/overlap.wav")),
        item("ok", &server.url("/files/overlap.wav")),
        item("missing", &server.url("/files/none.wav")),
        item("pdf", &server.url("/files/not-audio.mp3")),
    ];
    app.post_batch(&batch(items)).await;
    app.post_batch(&batch(vec![item("mp3", &server.url("/files/stereo.mp3"))]))
        .await;
    app.drain().await;
    let projections: Vec<Arc<dyn Projection>> = vec![
        Arc::new(ReadModels(app.privacy.clone())),
        Arc::new(ProcessingJobs(app.privacy.clone())),
        Arc::new(CallbackDeliveries),
    ];
    for projection in projections {
        let projector = Projector::new(app.pool.clone(), projection.clone());
        // The live tables as the running service left them, once it applied the whole log.
        catch_up_to_the_end(&projector, &app, projection.name()).await;
        let mut live = Vec::new();
        for table in projection.tables() {
            live.push(table_rows(&app, table).await);
        }
        projector.reset().await.unwrap();
        catch_up_to_the_end(&projector, &app, projection.name()).await;
        for (table, before) in projection.tables().iter().zip(live) {
            assert_eq!(
                table_rows(&app, table).await,
                before,
                "{table} differs after rebuild"
            );
        }
    }
    let day: Value = sqlx::query_scalar("select to_jsonb(d) from daily_tenant_stats d")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(day["calls"], 4);
    assert_eq!(day["completed"], 2);
    assert_eq!(day["failed"], 2);
    assert!(
        (day["total_recording_minutes"].as_f64().unwrap() - 0.2).abs() < 0.01,
        "{day}"
    );
}

#[tokio::test]
async fn the_projector_never_skips_an_event_that_commits_late() {
    let app = TestApp::spawn().await;
    app.post_batch(&batch(vec![item_with_id("seed")])).await;
    let read_models = Projector::new(app.pool.clone(), Arc::new(ReadModels(app.privacy.clone())));
    catch_up_until(&read_models, &app, "select count(*) from call", 1).await;
    let payload: Value =
        sqlx::query_scalar("select payload from events where aggregate_id = 'partner-a:seed'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let with_id = |id: &str| {
        let mut p = payload.clone();
        p["CallAccepted"]["call"]["call"]["id"] = json!(id);
        p
    };
    let insert = "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
                  values ('Call', $1, 1, 'CallAccepted', '1', $2, '{}')";

    // `late` takes the lower position but commits after `early`.
    let mut slow_writer = app.pool.begin().await.unwrap();
    sqlx::query(insert)
        .bind("partner-a:late")
        .bind(with_id("late"))
        .execute(&mut *slow_writer)
        .await
        .unwrap();
    sqlx::query(insert)
        .bind("partner-a:early")
        .bind(with_id("early"))
        .execute(&app.pool)
        .await
        .unwrap();
    read_models.catch_up().await.unwrap();
    slow_writer.commit().await.unwrap();
    // Other databases' transactions share the cluster's xmin: wait (bounded) rather than race.
    // A skipped event would never appear, so this still fails if `late` is skipped.
    catch_up_until(&read_models, &app, "select count(*) from call", 3).await;

    let ids: Vec<String> = sqlx::query_scalar("select call_id from call order by call_id")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(ids, ["early", "late", "seed"]);
}
