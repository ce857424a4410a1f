//! Personal fields are sealed in the event log under per-call keys (issue 16).

use std::time::Duration;

use serde_json::json;
use sqlx::ConnectOptions;

use crate::helpers::{batch, json_body, published_item, spawn_app, TEST_MASTER_KEY};
use crate::instances::free_port;

/// The clear values of [`published_item`] that are personal data.
const PERSONAL: [&str; 7] = [
    "+1234567890",
    "John Doe",
    "agent@example.com",
    "Jane Smith",
    "customer@example.com",
    "Q1 Outreach",
    "recordings.invalid",
];

#[tokio::test]
async fn personal_fields_are_sealed_in_the_event_log_and_read_back_in_clear() {
    let app = spawn_app().await;
    // Both paths: a batch appended at once, and one call by call (a resubmission).
    assert_eq!(
        app.post_batch(&batch(vec![published_item()]))
            .await
            .status(),
        200
    );

    let stored = app.stored_call_events("partner-a", "call123").await;
    let stored_text = serde_json::to_string(&stored).unwrap();
    for value in PERSONAL {
        assert!(
            !stored_text.contains(value),
            "{value} is in the event log in clear: {stored_text}"
        );
    }
    // Ids, times and the callback URL (the partner's own endpoint) stay in clear.
    let accepted = &stored[0].1["CallAccepted"];
    assert_eq!(accepted["call"]["call"]["id"], "call123");
    assert_eq!(accepted["call"]["agent"]["id"], "agent123");
    assert_eq!(
        accepted["call"]["callback_url"],
        "https://partner.invalid/callback"
    );
    assert!(accepted["sealed"]["call"].is_string());
    assert!(accepted["sealed"]["agent"].is_string());

    // One key row, both keys and the blind indexes of the number and both e-mails.
    let (call_key, agent_key, number, customer, agent): (
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
    ) = sqlx::query_as(
        "select call_key, agent_key, contact_number_index, customer_email_index, agent_email_index
         from keyring.call_key where call_aggregate_id = 'partner-a:call123'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    for column in [&call_key, &agent_key, &number, &customer, &agent] {
        assert!(column.as_ref().is_some_and(|v| !v.is_empty()));
    }

    // Every reader opens them: the events as a reader sees them, the partner's history.
    let opened = &app.call_events("partner-a", "call123").await[0].1["CallAccepted"]["call"];
    assert_eq!(opened["call"]["contact_number"], "+1234567890");
    assert_eq!(opened["agent"]["name"], "John Doe");
    assert_eq!(opened["customer"]["email"], "customer@example.com");
    assert_eq!(opened["metadata"]["campaign"], "Q1 Outreach");
    assert_eq!(opened["extra"]["industry"], "Technology");
    let history = json_body(
        app.client
            .get(app.url("/api/v1/partner/calls/call123/events"))
            .header("x-partner-id", "partner-a")
            .header("x-api-key", &app.partner.api_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let payload = &history["events"][0]["payload"]["call"];
    assert_eq!(
        payload["call"]["contact_number"], "+1234567890",
        "{history}"
    );
    assert_eq!(payload["agent"]["email"], "agent@example.com");
    assert!(history["events"][0]["payload"]
        .get("personal_data_erased")
        .is_none());
}

#[tokio::test]
async fn a_resubmission_compares_with_the_opened_call() {
    let app = spawn_app().await;
    for _ in 0..2 {
        assert_eq!(
            app.post_batch(&batch(vec![published_item()]))
                .await
                .status(),
            200
        );
    }
    let events = app.call_events("partner-a", "call123").await;
    assert_eq!(events[1].0, "DuplicateSubmissionReceived");
    // Compared in clear: the same submission does not differ.
    assert_eq!(
        events[1].1["DuplicateSubmissionReceived"]["payload_differs"],
        json!(false)
    );
}

async fn serve_with_key(database_url: &str, key: Option<&str>) -> std::process::Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_callingest"));
    command
        .arg("serve")
        .env_remove("CALLINGEST_MASTER_KEY")
        .env("DATABASE_URL", database_url)
        .env("CALLINGEST_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("CALLINGEST_LOG", "warn")
        .kill_on_drop(true);
    if let Some(key) = key {
        command.env("CALLINGEST_MASTER_KEY", key);
    }
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the instance exits")
        .unwrap()
}

#[tokio::test]
async fn a_missing_or_wrong_master_key_is_refused_at_start_with_a_clear_message() {
    let app = spawn_app().await;
    let url = app.pool.connect_options().to_url_lossy().to_string();

    let missing = serve_with_key(&url, None).await;
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("CALLINGEST_MASTER_KEY is not set"),
        "{stderr}"
    );

    let malformed = serve_with_key(&url, Some("not a key")).await;
    assert!(!malformed.status.success());
    let stderr = String::from_utf8_lossy(&malformed.stderr);
    assert!(
        stderr.contains("CALLINGEST_MASTER_KEY is not valid base64"),
        "{stderr}"
    );

    // 32 valid bytes, but not the key this database was first started with.
    let other = "b3RoZXIgbWFzdGVyIGtleSBvZiBjYWxsaW5nZXN0ISE=";
    assert_ne!(other, TEST_MASTER_KEY);
    let wrong = serve_with_key(&url, Some(other)).await;
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        stderr
            .contains("CALLINGEST_MASTER_KEY is not the master key this database was sealed with"),
        "{stderr}"
    );
}
