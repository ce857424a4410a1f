//! The generated Rust client (`client/`, progenitor over `openapi/openapi.json`) against the
//! running service: every request of these tests goes through it, so they fail when the
//! committed spec stops describing what the service does.

use std::collections::{HashMap, HashSet};

use callingest::partners::PartnerCredentials;
use callingest_client::types::{
    self, AgentInfo, BatchCallRequest, CallInfo, CallReceiptStatus, CallStatus, CallSubmission,
    CallView, CustomFieldInfo, CustomerInfo, MetadataValue,
};
use callingest_client::{Client, Error};
use chrono::{DateTime, Utc};
use serde_json::json;

use crate::helpers::recording_server::RecordingServer;
use crate::helpers::TestApp;

fn time(text: &str) -> DateTime<Utc> {
    text.parse().expect("a valid timestamp")
}

/// A call as a partner builds it with the client's types: no callback (callbacks have their
/// own tests and would add events to the history asserted here). The builders want every
/// `extra` map (the unknown fields to send) given, empty or not.
fn submission(id: &str, recording_url: &str) -> CallSubmission {
    CallSubmission::builder()
        .call(
            CallInfo::builder()
                .id(id)
                .recording_url(recording_url)
                .start_time(time("2023-01-01T10:00:00Z"))
                .end_time(time("2023-01-01T10:30:00Z"))
                .contact_number("+1234567890")
                .extra(serde_json::Map::new()),
        )
        .agent(
            AgentInfo::builder()
                .id("agent123")
                .email(Some("agent@example.com".parse().unwrap()))
                .name(Some("John Doe".parse().unwrap()))
                .extra(serde_json::Map::new()),
        )
        .customer(
            CustomerInfo::builder()
                .id("customer123")
                .name(Some("Jane Smith".parse().unwrap()))
                .disposition_status(Some("interested".parse().unwrap()))
                .extra(serde_json::Map::new()),
        )
        .extra(serde_json::Map::new())
        .try_into()
        .expect("the client accepts this call")
}

fn batch(calls: Vec<CallSubmission>) -> BatchCallRequest {
    BatchCallRequest { data: calls }
}

/// The client as a partner would build it, pointed at the test app: credentials given once
/// (`callingest_client::partner_client`, through the harness).
fn client(app: &TestApp) -> Client {
    app.partner_api()
}

async fn submit(
    sdk: &Client,
    body: BatchCallRequest,
) -> Result<types::BatchAccepted, Error<types::ErrorBody>> {
    sdk.submit_batch_call()
        .x_tenant_id("tenant1")
        .x_sub_tenant_id("subtenant1")
        .body(body)
        .send()
        .await
        .map(|answer| answer.into_inner())
}

async fn get_call(sdk: &Client, call_id: &str) -> Result<CallView, Error<types::ErrorBody>> {
    sdk.get_call()
        .call_id(call_id)
        .send()
        .await
        .map(|answer| answer.into_inner())
}

/// The call once the service ran out of work: finished, one way or the other.
async fn finished(app: &TestApp, sdk: &Client, call_id: &str) -> CallView {
    app.drain().await;
    let call = get_call(sdk, call_id)
        .await
        .unwrap_or_else(|e| panic!("getCall {call_id} failed: {e}"));
    assert!(
        matches!(call.status, CallStatus::Completed | CallStatus::Failed),
        "call {call_id} not finished after the drain: {call:?}"
    );
    call
}

/// The status and body of an error answer, or a failure naming what came instead.
fn error_answer<T: std::fmt::Debug>(
    result: Result<T, Error<types::ErrorBody>>,
) -> (u16, types::ErrorBody) {
    match result {
        Err(Error::ErrorResponse(answer)) => (answer.status().as_u16(), answer.into_inner()),
        other => panic!("expected an error answer, got {other:?}"),
    }
}

#[tokio::test]
async fn a_call_submitted_through_the_client_is_processed_and_its_history_read_back() {
    let app = TestApp::spawn_processing().await;
    let recordings = RecordingServer::start().await;
    let sdk = client(&app);

    let mut call = submission("sdk-1", &recordings.url("/files/left-only.wav"));
    call.metadata = HashMap::from([
        (
            "campaign".to_owned(),
            MetadataValue::String("Q1".to_owned()),
        ),
        ("priority".to_owned(), MetadataValue::Double(2.0)),
    ]);
    call.custom_fields = vec![CustomFieldInfo {
        internal_name: "crm_id".parse().unwrap(),
        value: "A-17".parse().unwrap(),
    }];
    call.extra
        .insert("industry".to_owned(), json!("Technology"));
    call.call
        .extra
        .insert("direction".to_owned(), json!("inbound"));
    let accepted = submit(&sdk, batch(vec![call])).await.unwrap();
    assert!(accepted.success);
    assert_eq!(accepted.calls.len(), 1);
    assert_eq!(accepted.calls[0].id, "sdk-1");
    assert_eq!(accepted.calls[0].status, CallReceiptStatus::Accepted);

    let call = finished(&app, &sdk, "sdk-1").await;
    assert_eq!(call.status, CallStatus::Completed, "{call:?}");
    assert_eq!(call.batch_id.to_string(), accepted.batch_id);
    assert_eq!(
        (call.tenant_id.as_str(), call.sub_tenant_id.as_str()),
        ("tenant1", "subtenant1")
    );
    assert_eq!(call.recording_format.as_deref(), Some("wav"));
    assert_eq!(call.channels, Some(2));
    assert_eq!(call.recording_duration_ms, Some(4_000));
    assert_eq!(call.customer_talk_ms, Some(0));
    let agent_talk = call.agent_talk_ms.expect("agent talk measured");
    assert!(
        (1_900..=2_100).contains(&agent_talk),
        "agent talk {agent_talk}"
    );
    assert!(call.silence_ratio.is_some() && call.peak_dbfs.is_some());
    assert!(call.recording_sha256.is_some() && call.completed_at.is_some());

    let history = sdk
        .get_call_events()
        .call_id("sdk-1")
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(history.call_id, "sdk-1");
    let types: Vec<&str> = history
        .events
        .iter()
        .map(|e| e.event_type.as_str())
        .collect();
    assert_eq!(
        types,
        [
            "CallAccepted",
            "RecordingFetchStarted",
            "RecordingFetched",
            "RecordingAnalyzed",
            "ProcessingCompleted"
        ]
    );
    let sequences: Vec<i64> = history.events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, [1, 2, 3, 4, 5]);
    assert!(history
        .events
        .windows(2)
        .all(|pair| pair[0].recorded_at <= pair[1].recorded_at));
    // Partners never see the support-only request metadata.
    assert!(history.events.iter().all(|e| e.metadata.is_none()));
    // What the client sent, extra fields included, is what the service kept.
    let kept = &history.events[0].payload["call"];
    assert_eq!(kept["metadata"], json!({"campaign": "Q1", "priority": 2.0}));
    assert_eq!(
        kept["custom_fields"],
        json!([{"internal_name": "crm_id", "value": "A-17"}])
    );
    assert_eq!(kept["extra"], json!({"industry": "Technology"}));
    assert_eq!(kept["call"]["extra"], json!({"direction": "inbound"}));

    let batch = sdk
        .get_batch()
        .batch_id(&accepted.batch_id)
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.batch_id.to_string(), accepted.batch_id);
    assert_eq!((batch.call_count, batch.completed_count), (1, 1));
    assert_eq!(
        (
            batch.accepted_count,
            batch.failed_count,
            batch.duplicate_count
        ),
        (0, 0, 0)
    );
    assert_eq!(batch.calls.len(), 1);
    assert_eq!(batch.calls[0].status, CallStatus::Completed);
}

#[tokio::test]
async fn resubmitting_a_call_through_the_client_answers_duplicate() {
    let app = TestApp::spawn().await;
    let sdk = client(&app);
    let call = || submission("sdk-dup", "https://recordings.invalid/sdk-dup.mp3");
    submit(&sdk, batch(vec![call()])).await.unwrap();

    let again = submit(&sdk, batch(vec![call()])).await.unwrap();

    assert_eq!(again.calls[0].status, CallReceiptStatus::Duplicate);
}

#[tokio::test]
async fn listing_with_a_small_limit_pages_through_every_call_exactly_once() {
    let app = TestApp::spawn_processing().await;
    let sdk = client(&app);
    // A recording the server does not have: each call fails at once, all listing needs.
    let recordings = RecordingServer::start().await;
    let missing = recordings.url("/files/missing.wav");
    let ids: Vec<String> = (0..7).map(|n| format!("page-{n}")).collect();
    let calls = ids.iter().map(|id| submission(id, &missing)).collect();
    submit(&sdk, batch(calls)).await.unwrap();
    for id in &ids {
        finished(&app, &sdk, id).await;
    }

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut request = sdk.list_calls().limit(3);
        if let Some(cursor) = &cursor {
            request = request.cursor(cursor);
        }
        let page = request.send().await.unwrap().into_inner();
        pages += 1;
        assert!(page.calls.len() <= 3, "a page holds at most `limit` calls");
        seen.extend(page.calls.into_iter().map(|c| c.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }

    assert_eq!(pages, 3);
    assert_eq!(seen.len(), ids.len(), "{seen:?}");
    assert_eq!(
        seen.iter().collect::<HashSet<_>>(),
        ids.iter().collect::<HashSet<_>>()
    );
    // Filters are typed too: every call failed, none completed.
    let completed = sdk
        .list_calls()
        .status(CallStatus::Completed)
        .send()
        .await
        .unwrap();
    assert!(completed.calls.is_empty());
}

#[tokio::test]
async fn a_batch_breaking_field_rules_is_a_typed_422_with_every_field_path() {
    let app = TestApp::spawn().await;
    let sdk = client(&app);
    // Rules the schema cannot express, so the client sends the batch and the service judges:
    // a blank id, an end before the start, an email that is not one.
    let mut call = submission("   ", "https://recordings.invalid/a.mp3");
    call.call.end_time = time("2023-01-01T09:00:00Z");
    call.agent.email = Some("not-an-email".parse().unwrap());

    let (status, body) = error_answer(submit(&sdk, batch(vec![call])).await);

    assert_eq!(status, 422);
    assert!(!body.success);
    assert_eq!(body.message, "Validation failed");
    let fields: Vec<&str> = body.errors.iter().map(|e| e.field.as_str()).collect();
    for expected in [
        "data[0].call.id",
        "data[0].call.end_time",
        "data[0].agent.email",
    ] {
        assert!(fields.contains(&expected), "{expected} in {fields:?}");
    }
    let id_error = body
        .errors
        .iter()
        .find(|e| e.field == "data[0].call.id")
        .unwrap();
    assert_eq!(id_error.message, "id should not be empty");
    assert_eq!(app.event_count().await, 0, "nothing is stored");
    // What the schema does express is refused by the client before any request.
    assert!(types::CallInfoId::try_from("").is_err());
    assert!(types::CallInfoContactNumber::try_from("0123").is_err());
}

#[tokio::test]
async fn a_wrong_api_key_is_a_typed_403() {
    let app = TestApp::spawn().await;
    let mut partner = app.partner.clone();
    partner.api_key = "not-the-key".to_owned();
    let sdk = app.partner_api_as(&partner);

    let submitted = submit(
        &sdk,
        batch(vec![submission("k1", "https://recordings.invalid/k1.mp3")]),
    )
    .await;
    let read = get_call(&sdk, "k1").await;

    for (status, body) in [error_answer(submitted), error_answer(read)] {
        assert_eq!(status, 403);
        assert_eq!(body.message, "Forbidden");
        assert!(!body.success && body.errors.is_empty());
    }
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test]
async fn an_unknown_call_or_batch_is_a_typed_404() {
    let app = TestApp::spawn().await;
    let sdk = client(&app);

    let call = get_call(&sdk, "never-sent").await;
    let events = sdk.get_call_events().call_id("never-sent").send().await;
    let batch = sdk
        .get_batch()
        .batch_id(uuid::Uuid::new_v4().to_string())
        .send()
        .await;

    for (status, body) in [
        error_answer(call),
        error_answer(events),
        error_answer(batch),
    ] {
        assert_eq!(status, 404);
        assert_eq!(body.message, "Not found");
    }
}

#[tokio::test]
async fn support_staff_give_the_admin_token_once_for_several_operations() {
    let app = TestApp::spawn().await;
    let support = app.admin_api();

    let created = support
        .create_partner()
        .body(types::NewPartner {
            id: "acme".parse().unwrap(),
            name: None,
            rate_limit_per_minute: None,
        })
        .send()
        .await
        .unwrap()
        .into_inner();
    let rotated = support
        .rotate_partner_api_key()
        .partner_id("acme")
        .send()
        .await
        .unwrap()
        .into_inner();
    let found = support
        .search_calls()
        .partner_id("acme")
        .send()
        .await
        .unwrap()
        .into_inner();

    assert_eq!(created.partner_id, "acme");
    assert_ne!(rotated.api_key, created.api_key);
    assert!(found.calls.is_empty() && found.next_cursor.is_none());
    // The rotated key is the one that works, given once to the partner's client.
    let acme = PartnerCredentials {
        api_key: rotated.api_key,
        ..created_credentials(created)
    };
    let call = submission("acme-1", "https://recordings.invalid/acme-1.mp3");
    submit(&app.partner_api_as(&acme), batch(vec![call]))
        .await
        .unwrap();
    // A client without the token is refused with the contract's 403, not a 401.
    let stranger = callingest_client::admin_client(&app.address, "not-the-token").unwrap();
    let (status, body) = error_answer(stranger.search_calls().send().await);
    assert_eq!((status, body.message.as_str()), (403, "Forbidden"));
}

fn created_credentials(created: types::PartnerCredentialsBody) -> PartnerCredentials {
    PartnerCredentials {
        partner_id: created.partner_id,
        api_key: created.api_key,
        signing_secret: created.signing_secret,
    }
}

/// The document declares the credentials once: partner operations need the partner id with
/// either key, support operations the admin token, probes nothing; no operation lists the
/// credentials as parameters of its own.
#[tokio::test]
async fn the_served_document_declares_the_credentials_as_security_schemes() {
    let app = TestApp::spawn().await;
    let spec: serde_json::Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let schemes = &spec["components"]["securitySchemes"];
    assert_eq!(
        schemes["partnerId"],
        json!({"type": "apiKey", "in": "header", "name": "x-partner-id",
               "description": schemes["partnerId"]["description"]})
    );
    assert_eq!(schemes["apiKey"]["name"], "x-api-key");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["adminToken"]["scheme"], "bearer");
    let partner = json!([{"partnerId": [], "apiKey": []}, {"partnerId": [], "bearer": []}]);
    let admin = json!([{"adminToken": []}]);
    let mut checked = 0;
    for (path, operations) in spec["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let expected = if path.starts_with("/api/v1/partner/") {
                &partner
            } else if path.starts_with("/api/v1/admin/") {
                &admin
            } else {
                &serde_json::Value::Null
            };
            assert_eq!(&operation["security"], expected, "{method} {path}");
            let parameters = operation["parameters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert!(
                parameters
                    .iter()
                    .all(|p| !["x-partner-id", "x-api-key"].contains(&p["name"].as_str().unwrap())),
                "{method} {path} lists a credential as a parameter"
            );
            checked += 1;
        }
    }
    assert!(checked >= 14, "{checked} operations");
}
