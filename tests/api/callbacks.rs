//! The callback saga end to end: real HTTPS receivers on 127.0.0.1 with a certificate from a
//! test CA (trusted through CALLINGEST_EXTRA_CA_FILE), signatures checked as a partner would.

use std::time::Duration;

use callingest::callbacks::signature::{verify, SigningSecret};
use callingest::callbacks::webhook_id;
use callingest::config::{Role, WorkersConfig};
use serde_json::{json, Value};

use crate::helpers::callback_receiver::{ReceivedRequest, Receiver, Reply, TestCa};
use crate::helpers::recording_server::RecordingServer;
use crate::helpers::{batch, item, test_workers, wait_until, TestApp, ADMIN_TOKEN};

const WAIT: Duration = Duration::from_secs(20);

fn settings(ca: &TestCa) -> WorkersConfig {
    let mut processing = test_workers();
    processing.outbound.extra_ca_file = Some(ca.ca_file().to_owned());
    processing
}

async fn app_with(ca: &TestCa) -> TestApp {
    TestApp::builder()
        .role(Role::All)
        .workers(settings(ca))
        .spawn()
        .await
}

/// A call whose recording is the left-only WAV and whose outcome goes to `receiver`.
fn call_to(id: &str, recordings: &RecordingServer, receiver: &Receiver) -> Value {
    let mut call = item(id, &recordings.url("/files/left-only.wav"));
    call["callback_url"] = json!(receiver.url());
    call["metadata"] = json!({"campaign": "Q1 Outreach", "attempt": 3});
    call
}

async fn callback_events(app: &TestApp, call_id: &str) -> Vec<(String, Value)> {
    app.call_events("partner-a", call_id)
        .await
        .into_iter()
        .filter(|(t, _)| t.starts_with("Callback"))
        .collect()
}

/// Waits until the call has an event of type `event_type` (for a step in the middle of the
/// saga; its end is awaited by [`TestApp::drain`]).
async fn wait_for_event(app: &TestApp, call_id: &str, event_type: &str) {
    wait_until(&format!("{event_type} of {call_id}"), WAIT, || async move {
        app.call_events("partner-a", call_id)
            .await
            .iter()
            .any(|(t, _)| t == event_type)
    })
    .await;
}

fn assert_signed(app: &TestApp, request: &ReceivedRequest) {
    let secret = SigningSecret::parse(&app.partner.signing_secret).unwrap();
    let id = request.header("webhook-id").expect("webhook-id");
    let timestamp: i64 = request
        .header("webhook-timestamp")
        .expect("webhook-timestamp")
        .parse()
        .unwrap();
    let signature = request
        .header("webhook-signature")
        .expect("webhook-signature");
    assert!(
        verify(&secret, id, timestamp, &request.body, signature),
        "bad signature"
    );
    let age = chrono::Utc::now().timestamp() - timestamp;
    assert!((0..60).contains(&age), "stale timestamp {timestamp}");
}

#[tokio::test]
async fn a_completed_call_is_delivered_signed_with_its_metadata_and_analytics() {
    let ca = TestCa::new();
    let receiver = Receiver::start(&ca, vec![Reply::Status(204)]).await;
    let recordings = RecordingServer::start().await;
    let app = app_with(&ca).await;

    app.post_batch(&batch(vec![call_to("c1", &recordings, &receiver)]))
        .await;
    let requests = receiver.wait_for_requests(1, WAIT).await;

    let request = &requests[0];
    assert_signed(&app, request);
    assert_eq!(
        request.header("webhook-id"),
        Some(webhook_id("partner-a:c1").as_str())
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    let body = request.json();
    assert_eq!(body["call_id"], "c1");
    assert_eq!(body["status"], "completed");
    assert!(body["error"].is_null());
    assert!(body["processing_time"].as_f64().unwrap() > 0.0);
    assert_eq!(
        body["metadata"],
        json!({"campaign": "Q1 Outreach", "attempt": 3})
    );
    assert_eq!(body["results"]["analytics_available"], true);
    assert_eq!(body["results"]["transcription_available"], false);
    assert_eq!(body["results"]["customer_talk_ms"], 0);
    assert_eq!(body["results"]["channels"], 2);

    app.drain().await;
    let events = callback_events(&app, "c1").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].1["CallbackDelivered"]["attempt"], 1);
    assert_eq!(events[0].1["CallbackDelivered"]["status_code"], 204);
    let row = app.final_row("c1").await;
    assert_eq!(row["status"], "completed");
}

#[tokio::test]
async fn a_failed_call_is_reported_with_its_reason() {
    let ca = TestCa::new();
    let receiver = Receiver::start(&ca, vec![Reply::Status(200)]).await;
    let recordings = RecordingServer::start().await;
    let app = app_with(&ca).await;
    let mut call = call_to("broken", &recordings, &receiver);
    call["call"]["recording_url"] = json!(recordings.url("/files/not-audio.mp3"));

    app.post_batch(&batch(vec![call])).await;
    let requests = receiver.wait_for_requests(1, WAIT).await;

    let body = requests[0].json();
    assert_eq!(body["status"], "failed");
    assert_eq!(body["error"], "unsupported recording format");
    assert!(body["results"].is_null());
    assert_eq!(body["metadata"]["campaign"], "Q1 Outreach");
}

#[tokio::test]
async fn a_receiver_failing_three_times_gets_four_attempts_with_growing_delays() {
    let ca = TestCa::new();
    let script = vec![
        Reply::Status(500),
        Reply::Status(500),
        Reply::Status(500),
        Reply::Status(200),
    ];
    let receiver = Receiver::start(&ca, script).await;
    let recordings = RecordingServer::start().await;
    let app = app_with(&ca).await;

    app.post_batch(&batch(vec![call_to("c1", &recordings, &receiver)]))
        .await;
    let requests = receiver.wait_for_requests(4, WAIT).await;
    app.drain().await;

    let gaps: Vec<Duration> = requests
        .windows(2)
        .map(|w| w[1].received_at - w[0].received_at)
        .collect();
    // Base 200 ms: about 200, 400 and 800 ms (±10 %).
    assert!(gaps[0] >= Duration::from_millis(170), "{gaps:?}");
    assert!(
        gaps[1] > gaps[0] && gaps[2] > gaps[1],
        "delays do not grow: {gaps:?}"
    );
    let ids: Vec<_> = requests
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "webhook-id changed between retries"
    );
    for request in &requests {
        assert_signed(&app, request);
    }
    let types: Vec<String> = callback_events(&app, "c1")
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(
        types,
        [
            "CallbackAttemptFailed",
            "CallbackAttemptFailed",
            "CallbackAttemptFailed",
            "CallbackDelivered"
        ]
    );
    let events = callback_events(&app, "c1").await;
    assert_eq!(events[0].1["CallbackAttemptFailed"]["status_code"], 500);
    assert_eq!(events[3].1["CallbackDelivered"]["attempt"], 4);
}

#[tokio::test]
async fn a_receiver_that_always_fails_is_abandoned_after_four_attempts() {
    let ca = TestCa::new();
    let receiver = Receiver::start(&ca, vec![Reply::Status(500)]).await;
    let recordings = RecordingServer::start().await;
    let app = app_with(&ca).await;

    app.post_batch(&batch(vec![call_to("c1", &recordings, &receiver)]))
        .await;
    // Drained: no delivery is left in the queue, so no fifth attempt can come.
    app.drain().await;

    assert_eq!(receiver.requests().len(), 4);
    let events = callback_events(&app, "c1").await;
    assert_eq!(events.len(), 5);
    assert!(events[3].1["CallbackAttemptFailed"]["next_attempt_at"].is_null());
    assert_eq!(events[4].1["CallbackAbandoned"]["attempts"], 4);
    let row = app.final_row("c1").await;
    assert_eq!(row["callback_status"], "abandoned");
    assert_eq!(row["callback_attempts"], 4);
}

#[tokio::test]
async fn a_slow_receiver_times_out_and_is_retried() {
    let ca = TestCa::new();
    let receiver = Receiver::start(
        &ca,
        vec![
            Reply::Delayed(Duration::from_millis(1_500), 200),
            Reply::Status(200),
        ],
    )
    .await;
    let recordings = RecordingServer::start().await;
    let mut processing = settings(&ca);
    processing.callbacks.timeout = Duration::from_millis(300);
    let app = TestApp::builder()
        .role(Role::All)
        .workers(processing)
        .spawn()
        .await;

    app.post_batch(&batch(vec![call_to("c1", &recordings, &receiver)]))
        .await;
    app.drain().await;

    let events = callback_events(&app, "c1").await;
    let failed = &events[0].1["CallbackAttemptFailed"];
    assert_eq!(failed["error"], "timeout");
    assert!(failed["status_code"].is_null());
    assert!(failed["response_time_ms"].as_u64().unwrap() >= 300);
    assert_eq!(events[1].1["CallbackDelivered"]["attempt"], 2);
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_counts_as_a_failed_attempt() {
    let ca = TestCa::new();
    let elsewhere = Receiver::start(&ca, vec![Reply::Status(200)]).await;
    let receiver = Receiver::start(
        &ca,
        vec![Reply::Redirect(elsewhere.url()), Reply::Status(200)],
    )
    .await;
    let recordings = RecordingServer::start().await;
    let app = app_with(&ca).await;

    app.post_batch(&batch(vec![call_to("c1", &recordings, &receiver)]))
        .await;
    app.drain().await;

    let events = callback_events(&app, "c1").await;
    assert_eq!(events[0].1["CallbackAttemptFailed"]["status_code"], 302);
    assert!(elsewhere.requests().is_empty(), "the redirect was followed");
    assert_eq!(receiver.requests().len(), 2);
}

#[tokio::test]
async fn retry_after_on_429_is_honoured_when_longer_than_the_backoff() {
    let ca = TestCa::new();
    let too_many = Reply::StatusWithHeaders(429, vec![("retry-after".into(), "2".into())]);
    let receiver = Receiver::start(&ca, vec![too_many, Reply::Status(200)]).await;
    let recordings = RecordingServer::start().await;
    let app = app_with(&ca).await;

    app.post_batch(&batch(vec![call_to("c1", &recordings, &receiver)]))
        .await;
    let requests = receiver.wait_for_requests(2, WAIT).await;

    let gap = requests[1].received_at - requests[0].received_at;
    assert!(gap >= Duration::from_millis(1_950), "retried after {gap:?}");
    assert!(gap < Duration::from_millis(4_000), "retried after {gap:?}");
}

#[tokio::test]
async fn a_restart_between_attempts_resumes_the_schedule_without_losing_or_doubling_one() {
    let ca = TestCa::new();
    let receiver = Receiver::start(&ca, vec![Reply::Status(503), Reply::Status(200)]).await;
    let recordings = RecordingServer::start().await;
    let mut processing = settings(&ca);
    processing.callbacks.backoff_base = Duration::from_millis(1_500);
    let app = TestApp::builder()
        .role(Role::All)
        .workers(processing)
        .spawn()
        .await;

    app.post_batch(&batch(vec![call_to("c1", &recordings, &receiver)]))
        .await;
    receiver.wait_for_requests(1, WAIT).await;
    wait_for_event(&app, "c1", "CallbackAttemptFailed").await;
    let app = app.restart().await;
    // Drained: delivered, and no delivery left in the queue to double it.
    app.drain().await;

    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0].header("webhook-id"),
        requests[1].header("webhook-id")
    );
    let gap = requests[1].received_at - requests[0].received_at;
    assert!(
        gap >= Duration::from_millis(1_300),
        "the backoff was not kept: {gap:?}"
    );
    let types: Vec<String> = callback_events(&app, "c1")
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(types, ["CallbackAttemptFailed", "CallbackDelivered"]);
}

#[tokio::test]
async fn support_can_redeliver_a_delivered_callback_with_the_same_webhook_id() {
    let ca = TestCa::new();
    let receiver = Receiver::start(&ca, vec![Reply::Status(200)]).await;
    let recordings = RecordingServer::start().await;
    let app = app_with(&ca).await;
    app.post_batch(&batch(vec![call_to("c1", &recordings, &receiver)]))
        .await;
    app.drain().await;
    let path = "/api/v1/admin/partners/partner-a/calls/c1/callback/redeliver";

    let refused = app
        .client
        .post(app.url(path))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let unknown = app
        .client
        .post(app.url("/api/v1/admin/partners/partner-a/calls/nope/callback/redeliver"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let response = app
        .client
        .post(app.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["webhook_id"], webhook_id("partner-a:c1").as_str());
    let requests = receiver.wait_for_requests(2, WAIT).await;
    assert_eq!(
        requests[0].header("webhook-id"),
        requests[1].header("webhook-id")
    );
    assert_eq!(requests[0].body, requests[1].body);
    assert_signed(&app, &requests[1]);
    // The second delivery is recorded once it is acknowledged.
    app.drain().await;
    let types: Vec<String> = callback_events(&app, "c1")
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(
        types,
        [
            "CallbackDelivered",
            "CallbackRedeliveryRequested",
            "CallbackDelivered"
        ]
    );
}

#[tokio::test]
async fn a_call_without_callback_url_cannot_be_redelivered() {
    let ca = TestCa::new();
    let recordings = RecordingServer::start().await;
    let app = app_with(&ca).await;
    let mut call = item("quiet", &recordings.url("/files/left-only.wav"));
    call.as_object_mut().unwrap().remove("callback_url");
    app.post_batch(&batch(vec![call])).await;
    app.final_row("quiet").await;

    let response = app
        .client
        .post(app.url("/api/v1/admin/partners/partner-a/calls/quiet/callback/redeliver"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"], "the call has no callback_url");
}

#[tokio::test]
async fn a_callback_to_a_loopback_address_is_refused_when_private_urls_are_not_allowed() {
    let ca = TestCa::new();
    let receiver = Receiver::start(&ca, vec![Reply::Status(200)]).await;
    let mut processing = settings(&ca);
    processing.outbound.allow_private_urls = false;
    let app = TestApp::builder()
        .role(Role::All)
        .workers(processing)
        .spawn()
        .await;
    // The recording is refused too (loopback), so the call fails and its outcome is due.
    let mut call = item("c1", "http://127.0.0.1:9/none.wav");
    call["callback_url"] = json!(receiver.url());

    app.post_batch(&batch(vec![call])).await;
    app.drain().await;

    assert!(
        receiver.requests().is_empty(),
        "the loopback receiver was contacted"
    );
    let events = callback_events(&app, "c1").await;
    assert_eq!(
        events[0].1["CallbackAttemptFailed"]["error"],
        "forbidden address"
    );
}
