//! The job runner end to end: heartbeat leases with tokens, takeover, the maximum step duration
//! and the graceful drain, with the default lease (30 s) and grace (20 s), a real recording
//! server on 127.0.0.1 that delays its answers, and real PostgreSQL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use callingest::config::{FetchConfig, JobsConfig, WorkersConfig};
use callingest::jobs::{claim_next, JobOutcome, FETCH};
use callingest_domain::call::RetryPolicy;
use callingest_projections::processing_jobs::ProcessingJobs;
use callingest_projections::Projector;
use serde_json::Value;

use crate::helpers::projectors::{catch_up_until, fetch_runner};
use crate::helpers::recording_server::RecordingServer;
use crate::helpers::{batch, item, test_workers, wait_until, TestApp};

/// Test settings, but downloads may take two minutes (the recording server here is slow on
/// purpose) and lease and grace are the defaults.
fn slow_downloads() -> WorkersConfig {
    let test = test_workers();
    WorkersConfig {
        fetch: FetchConfig {
            timeout: Duration::from_secs(120),
            ..test.fetch
        },
        jobs: JobsConfig::default(),
        ..test
    }
}

const RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 3,
    backoff_base_ms: 100,
};

/// Submits one call of `recording_url` and projects its job (no background tasks run).
async fn one_job(app: &TestApp, id: &str, recording_url: &str) -> Projector {
    app.post_batch(&batch(vec![item(id, recording_url)])).await;
    let jobs = Projector::new(
        app.pool.clone(),
        Arc::new(ProcessingJobs(app.privacy.clone())),
    );
    catch_up_until(&jobs, app, "select count(*) from processing_job", 1).await;
    jobs
}

/// Waits until the call has an event of type `event` (a step the test then interrupts).
async fn wait_for_event(app: &TestApp, id: &str, event: &str, within: Duration) {
    wait_until(&format!("{event} of {id}"), within, || async move {
        app.event_types(id).await.iter().any(|t| t == event)
    })
    .await;
}

async fn lease(app: &TestApp) -> Value {
    sqlx::query_scalar(
        "select jsonb_build_object('owner', lease_owner, 'token', lease_token,
                'held', lease_until > now(), 'released', lease_until is null)
         from processing_job",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

/// Another worker claims the row as if the first one's lease had run out (its renewals did
/// not reach the database): the expiry is forced, the claim is the real one.
async fn take_over(app: &TestApp) -> callingest::jobs::Claim {
    sqlx::query("update processing_job set lease_until = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .unwrap();
    let claim = claim_next(&app.pool, &FETCH, "thief", Duration::from_secs(30))
        .await
        .unwrap()
        .expect("the expired row can be claimed");
    assert!(claim.taken_over);
    claim
}

#[tokio::test]
async fn a_worker_whose_lease_was_taken_over_cannot_record_its_outcome() {
    let app = TestApp::spawn().await;
    let server = RecordingServer::start().await;
    one_job(&app, "stolen", &server.url("/delay/3000/left-only.wav")).await;
    let processing = slow_downloads();
    let worker = fetch_runner(&app, &processing, RETRY);
    let running = tokio::spawn(async move { worker.run_next("first").await });
    wait_for_event(
        &app,
        "stolen",
        "RecordingFetchStarted",
        Duration::from_secs(10),
    )
    .await;

    let thief = take_over(&app).await;
    // The download ends (about 3 s in, before any heartbeat): recording it is refused.
    let outcome = tokio::time::timeout(Duration::from_secs(15), running)
        .await
        .expect("the first worker returns")
        .unwrap();
    assert_eq!(outcome.unwrap(), JobOutcome::Processed);
    assert_eq!(
        app.event_types("stolen").await,
        ["CallAccepted", "RecordingFetchStarted"],
        "the worker that lost its lease recorded something"
    );
    let lease = lease(&app).await;
    assert_eq!(lease["owner"], "thief");
    assert_eq!(lease["token"], thief.token.to_string());
    assert_eq!(lease["held"], true);
}

#[tokio::test]
async fn a_step_whose_lease_was_taken_over_stops_at_its_next_heartbeat() {
    let app = TestApp::spawn().await;
    let server = RecordingServer::start().await;
    one_job(&app, "stolen", &server.url("/delay/60000/left-only.wav")).await;
    let processing = slow_downloads();
    let worker = fetch_runner(&app, &processing, RETRY);
    let running = tokio::spawn(async move { worker.run_next("first").await });
    wait_for_event(
        &app,
        "stolen",
        "RecordingFetchStarted",
        Duration::from_secs(10),
    )
    .await;

    let thief = take_over(&app).await;
    let taken = Instant::now();
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the step stops long before its 60 s download ends")
        .unwrap()
        .unwrap();
    // The next renewal (every lease/3) finds the row taken; the step then stops within 2 s.
    let stopped_after = taken.elapsed();
    assert!(
        stopped_after < processing.jobs.lease / 3 + Duration::from_secs(2),
        "stopped {stopped_after:?} after the takeover"
    );
    assert_eq!(
        app.event_types("stolen").await,
        ["CallAccepted", "RecordingFetchStarted"]
    );
    assert_eq!(lease(&app).await["token"], thief.token.to_string());
}

#[tokio::test]
async fn heartbeats_keep_a_long_download_leased_well_past_one_lease() {
    let app = TestApp::spawn().await;
    let server = RecordingServer::start().await;
    let jobs = one_job(&app, "long", &server.url("/delay/42000/left-only.wav")).await;
    let processing = slow_downloads();
    assert_eq!(
        processing.jobs.lease,
        Duration::from_secs(30),
        "the default lease"
    );
    let worker = fetch_runner(&app, &processing, RETRY);
    let claimed = Instant::now();
    let mut running = tokio::spawn(async move { worker.run_next("holder").await });
    let rival = fetch_runner(&app, &processing, RETRY);
    let mut checked_past_one_lease = false;
    loop {
        tokio::select! {
            outcome = &mut running => {
                assert_eq!(outcome.unwrap().unwrap(), JobOutcome::Processed);
                break;
            }
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                // Nobody else can take the job while its holder is alive.
                assert_eq!(rival.run_next("rival").await.unwrap(), JobOutcome::EmptyQueue);
                if claimed.elapsed() > processing.jobs.lease + Duration::from_secs(3) {
                    let lease = lease(&app).await;
                    assert_eq!(lease["owner"], "holder");
                    assert_eq!(lease["held"], true, "{lease}");
                    checked_past_one_lease = true;
                }
            }
        }
    }
    assert!(claimed.elapsed() > Duration::from_secs(40));
    assert!(checked_past_one_lease);
    jobs.catch_up().await.unwrap();
    let types = app.event_types("long").await;
    assert_eq!(
        types
            .iter()
            .filter(|t| *t == "RecordingFetchStarted")
            .count(),
        1,
        "{types:?}"
    );
    assert_eq!(
        types.last().map(String::as_str),
        Some("ProcessingCompleted")
    );
    assert_eq!(server.hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_step_past_its_maximum_duration_is_cancelled_as_a_failed_attempt() {
    let app = TestApp::spawn().await;
    let server = RecordingServer::start().await;
    one_job(&app, "hung", &server.url("/delay/60000/left-only.wav")).await;
    // Below the fetch timeout, which `validate` would refuse: the worker is driven by hand.
    let mut processing = slow_downloads();
    processing.fetch.step_max = Some(Duration::from_secs(2));
    let worker = fetch_runner(&app, &processing, RETRY);
    let started = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(10), worker.run_next("w"))
        .await
        .expect("the step is cancelled at its limit");
    assert_eq!(outcome.unwrap(), JobOutcome::Processed);
    assert!(started.elapsed() < Duration::from_secs(5));
    let events = app.call_events("partner-a", "hung").await;
    let (last, payload) = events.last().unwrap();
    assert_eq!(last, "RecordingFetchFailed");
    let failed = &payload["RecordingFetchFailed"];
    assert_eq!(
        failed["error"],
        "recording download did not finish within 2 s"
    );
    assert_eq!(failed["attempt"], 1);
    assert_eq!(failed["retryable"], true);
    assert!(failed["next_attempt_at"].is_string(), "{failed}");
}

/// Advisory locks held on this test's database (the projectors' locks).
async fn advisory_locks(app: &TestApp) -> i64 {
    sqlx::query_scalar(
        "select count(*) from pg_locks
         where locktype = 'advisory'
           and database = (select oid from pg_database where datname = current_database())",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_drain_interrupts_a_step_past_the_grace_releases_it_and_uses_no_attempt() {
    let app = TestApp::spawn().await;
    let server = RecordingServer::start().await;
    // One attempt only: were the interrupted attempt counted, the call would fail.
    let mut processing = slow_downloads();
    processing.fetch.max_attempts = 1;
    let instance = callingest::app::spawn_background(&app.pool, &app.privacy, &processing).unwrap();
    app.post_batch(&batch(vec![item(
        "drained",
        &server.url("/delay-once/60000/left-only.wav"),
    )]))
    .await;
    wait_for_event(
        &app,
        "drained",
        "RecordingFetchStarted",
        Duration::from_secs(10),
    )
    .await;
    assert!(
        advisory_locks(&app).await > 0,
        "the projectors hold their locks"
    );

    let grace = processing.jobs.shutdown_grace;
    assert_eq!(grace, Duration::from_secs(20), "the default grace");
    let draining = Instant::now();
    instance.drain(grace).await;
    let drained_after = draining.elapsed();
    assert!(
        drained_after >= grace && drained_after < grace + Duration::from_secs(5),
        "drained in {drained_after:?}"
    );
    // Released at once, not left to expire.
    let lease = lease(&app).await;
    assert_eq!(lease["released"], true, "{lease}");
    assert_eq!(lease["owner"], Value::Null);
    let events = app.call_events("partner-a", "drained").await;
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "CallAccepted",
            "RecordingFetchStarted",
            "RecordingFetchInterrupted"
        ]
    );
    assert_eq!(events[2].1["RecordingFetchInterrupted"]["attempt"], 1);
    assert_eq!(advisory_locks(&app).await, 0, "the projectors let go");

    // Another instance takes the call at once and completes it with the same single attempt.
    let restarted = Instant::now();
    let _other = callingest::app::spawn_background(&app.pool, &app.privacy, &processing).unwrap();
    let row = app.final_row("drained").await;
    assert_eq!(row["status"], "completed", "{row}");
    assert_eq!(row["fetch_attempts"], 1);
    assert!(
        restarted.elapsed() < Duration::from_secs(10),
        "the released job waited {:?}",
        restarted.elapsed()
    );
    let types = app.event_types("drained").await;
    let starts: Vec<Value> = app
        .call_events("partner-a", "drained")
        .await
        .into_iter()
        .filter(|(t, _)| t == "RecordingFetchStarted")
        .map(|(_, p)| p["RecordingFetchStarted"]["attempt"].clone())
        .collect();
    assert_eq!(starts, [1, 1], "{types:?}");
}

#[tokio::test]
async fn a_drain_lets_a_step_that_ends_within_the_grace_finish() {
    let app = TestApp::spawn().await;
    let server = RecordingServer::start().await;
    let processing = slow_downloads();
    let instance = callingest::app::spawn_background(&app.pool, &app.privacy, &processing).unwrap();
    app.post_batch(&batch(vec![item(
        "finishing",
        &server.url("/delay/3000/left-only.wav"),
    )]))
    .await;
    wait_for_event(
        &app,
        "finishing",
        "RecordingFetchStarted",
        Duration::from_secs(10),
    )
    .await;
    let draining = Instant::now();
    instance.drain(processing.jobs.shutdown_grace).await;
    assert!(draining.elapsed() < Duration::from_secs(10));
    let types = app.event_types("finishing").await;
    assert!(
        types.iter().any(|t| t == "ProcessingCompleted"),
        "{types:?}"
    );
    assert!(!types.iter().any(|t| t == "RecordingFetchInterrupted"));
}

#[tokio::test]
async fn metrics_report_each_pool() {
    let app = TestApp::spawn_processing().await;
    let server = RecordingServer::start().await;
    app.post_batch(&batch(vec![item(
        "measured",
        &server.url("/files/left-only.wav"),
    )]))
    .await;
    app.final_row("measured").await;
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "callingest_jobs_claimed_total{pool=\"fetch\"}",
        "callingest_jobs_succeeded_total{pool=\"fetch\"}",
        "callingest_queue_depth{pool=\"fetch\"}",
        "callingest_queue_oldest_due_seconds{pool=\"callbacks\"}",
        "callingest_jobs_in_flight{pool=\"fetch\"}",
        "callingest_job_step_duration_seconds_count{pool=\"fetch\"}",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
}
