//! Personal fields are sealed in the event log under per-call keys (issue 16).

use std::time::Duration;

use serde_json::{json, Value};
use sqlx::ConnectOptions;

use crate::helpers::instances::free_port;
use crate::helpers::recording_server::RecordingServer;
use crate::helpers::{batch, json_body, published_item, TestApp, ADMIN_TOKEN, TEST_MASTER_KEY};

/// Both wrapped keys and the three blind indexes of a `keyring.call_key` row.
type KeyRow = (
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
);

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
    let app = TestApp::spawn().await;
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
    let (call_key, agent_key, number, customer, agent): KeyRow = sqlx::query_as(
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
    let app = TestApp::spawn().await;
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
    let app = TestApp::spawn().await;
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

/// A call of `number`, its customer `name`/`email`, recorded at `recording_url`.
fn subject_item(id: &str, number: &str, name: &str, email: &str, recording_url: &str) -> Value {
    let mut item = published_item();
    item["call"]["id"] = json!(id);
    item["call"]["contact_number"] = json!(number);
    item["call"]["recording_url"] = json!(recording_url);
    item["customer"]["name"] = json!(name);
    item["customer"]["email"] = json!(email);
    item.as_object_mut().unwrap().remove("callback_url");
    item
}

async fn get(app: &TestApp, path: &str) -> Value {
    json_body(
        app.client
            .get(app.url(path))
            .header("x-partner-id", "partner-a")
            .header("x-api-key", &app.partner.api_key)
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn admin_get(app: &TestApp, path: &str) -> Value {
    json_body(
        app.client
            .get(app.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// Once the service ran out of work, the `call` read model holds every call of `ids` in a
/// final state.
async fn wait_until_finished(app: &TestApp, ids: &[&str]) {
    app.drain().await;
    let finished: i64 = sqlx::query_scalar(
        "select count(*) from call where partner_id = 'partner-a' and call_id = any($1)
         and status in ('completed', 'failed')",
    )
    .bind(ids)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(finished as usize, ids.len(), "calls not finished");
}

fn pg_dump(app: &TestApp) -> String {
    let options = app.pool.connect_options();
    let output = std::process::Command::new("pg_dump")
        .args([
            "--host",
            options.get_host(),
            "--username",
            options.get_username(),
        ])
        .args(["--port", &options.get_port().to_string()])
        .arg(options.get_database().expect("a test database"))
        .output()
        .expect("pg_dump runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn cli(app: &TestApp, args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_callingest"))
        .env("CALLINGEST_MASTER_KEY", TEST_MASTER_KEY)
        .args(args)
        .env(
            "DATABASE_URL",
            app.pool.connect_options().to_url_lossy().to_string(),
        )
        .env("CALLINGEST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn erasing_a_phone_number_leaves_no_trace_of_the_subject_while_other_calls_stay_intact() {
    let app = TestApp::spawn_processing().await;
    let recordings = RecordingServer::start().await;
    let wav = recordings.url("/files/silence.wav");
    let (number, name, email) = ("+447700900123", "Erin Subject", "erin.subject@example.org");
    let items = vec![
        subject_item("erase-1", number, name, email, &wav),
        subject_item("erase-2", number, name, "other@example.org", &wav),
        subject_item(
            "keep-1",
            "+447700900999",
            "Kept Person",
            "kept@example.org",
            &wav,
        ),
    ];
    assert_eq!(app.post_batch(&batch(items.clone())).await.status(), 200);
    wait_until_finished(&app, &["erase-1", "erase-2", "keep-1"]).await;
    // The read model holds the number in clear until the erasure: the dump below can see it.
    assert!(pg_dump(&app).contains(number));

    // Access: the subject's calls, by number (spaces ignored) and by e-mail.
    let listed = get(
        &app,
        "/api/v1/partner/data-privacy/calls?phone_number=%2B44%207700%20900123",
    )
    .await;
    assert_eq!(
        listed["calls"],
        json!([{"call_id": "erase-1", "role": "customer"}, {"call_id": "erase-2", "role": "customer"}])
    );
    let by_email = get(
        &app,
        "/api/v1/partner/data-privacy/calls?email=Erin.Subject@example.org",
    )
    .await;
    assert_eq!(
        by_email["calls"],
        json!([{"call_id": "erase-1", "role": "customer"}])
    );

    // Bad input: a clear 400, nothing erased.
    let both = app
        .client
        .post(app.url("/api/v1/partner/data-privacy/erase"))
        .header("x-partner-id", "partner-a")
        .header("x-api-key", &app.partner.api_key)
        .json(&json!({"phone_number": number, "email": email}))
        .send()
        .await
        .unwrap();
    assert_eq!(both.status(), 400);
    assert!(json_body(both).await["message"]
        .as_str()
        .unwrap()
        .contains("not both"));

    let erase = || async {
        let response = app
            .client
            .post(app.url("/api/v1/partner/data-privacy/erase"))
            .header("x-partner-id", "partner-a")
            .header("x-api-key", &app.partner.api_key)
            .json(&json!({"phone_number": number}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        json_body(response).await
    };
    let erased = erase().await;
    assert_eq!(erased["calls_erased"], 2, "{erased}");
    assert_eq!(erased["call_ids"], json!(["erase-1", "erase-2"]));
    // Idempotent: nothing is left to erase.
    assert_eq!(erase().await["calls_erased"], 0);
    assert_eq!(
        get(
            &app,
            "/api/v1/partner/data-privacy/calls?phone_number=%2B447700900123"
        )
        .await["calls"],
        json!([])
    );

    let traces = |text: &str| -> Vec<&str> {
        [number, "7700900123", name, email]
            .into_iter()
            .filter(|t| text.contains(t))
            .collect()
    };
    // Partner API: the call and its history.
    for id in ["erase-1", "erase-2"] {
        let call = get(&app, &format!("/api/v1/partner/calls/{id}")).await;
        assert_eq!(call["contact_number"], Value::Null, "{call}");
        assert_eq!(call["personal_data_erased"], true);
        assert!(traces(&call.to_string()).is_empty(), "{call}");
        let history = get(&app, &format!("/api/v1/partner/calls/{id}/events")).await;
        assert!(traces(&history.to_string()).is_empty(), "{history}");
        assert_eq!(
            history["events"][0]["payload"]["personal_data_erased"],
            true
        );
        let last = history["events"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        assert_eq!(last["event_type"], "PersonalDataErased", "{history}");
        // Admin API.
        let admin = admin_get(
            &app,
            &format!("/api/v1/admin/partners/partner-a/calls/{id}/events"),
        )
        .await;
        assert!(traces(&admin.to_string()).is_empty(), "{admin}");
        assert!(
            admin["events"].as_array().is_some_and(|e| !e.is_empty()),
            "{admin}"
        );
        // CLI history.
        let printed = cli(
            &app,
            &[
                "call",
                "history",
                "--partner",
                "partner-a",
                "--call",
                id,
                "--json",
            ],
        );
        assert!(printed.contains("PersonalDataErased"), "{printed}");
        assert!(traces(&printed).is_empty(), "{printed}");
    }
    // The other call is intact.
    let kept = get(&app, "/api/v1/partner/calls/keep-1").await;
    assert_eq!(kept["contact_number"], "+447700900999");
    assert_eq!(kept["personal_data_erased"], false);
    let kept_history = get(&app, "/api/v1/partner/calls/keep-1/events").await;
    assert_eq!(
        kept_history["events"][0]["payload"]["call"]["customer"]["name"],
        "Kept Person"
    );

    // Read models rebuilt from the log show the erased state.
    let rebuilt = cli(&app, &["projections", "rebuild", "read_models"]);
    assert!(rebuilt.contains("read_models"), "{rebuilt}");
    let (contact, flag): (Option<String>, bool) = sqlx::query_as(
        "select contact_number, personal_data_erased from call
         where partner_id = 'partner-a' and call_id = 'erase-1'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((contact, flag), (None, true));
    let kept_contact: Option<String> = sqlx::query_scalar(
        "select contact_number from call where partner_id = 'partner-a' and call_id = 'keep-1'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(kept_contact.as_deref(), Some("+447700900999"));

    // The whole database, event log and keyring included.
    let dump = pg_dump(&app);
    assert!(
        traces(&dump).is_empty(),
        "found {:?} in pg_dump",
        traces(&dump)
    );

    // The call id is not personal data: a resubmission is still a duplicate.
    let again = json_body(app.post_batch(&batch(vec![items[0].clone()])).await).await;
    assert_eq!(
        again["calls"],
        json!([{"id": "erase-1", "status": "duplicate"}])
    );
}

#[tokio::test]
async fn calls_older_than_the_partners_retention_lose_their_personal_data_and_newer_ones_keep_it() {
    let app = TestApp::spawn().await;
    let items = vec![
        subject_item(
            "old",
            "+447700900001",
            "Old Caller",
            "old@example.org",
            "https://r.invalid/a.wav",
        ),
        subject_item(
            "new",
            "+447700900002",
            "New Caller",
            "new@example.org",
            "https://r.invalid/b.wav",
        ),
    ];
    assert_eq!(app.post_batch(&batch(items)).await.status(), 200);
    let calls = callingest::event_store::store(app.pool.clone(), &app.privacy);
    // No retention set: nothing is erased, however old.
    sqlx::query(
        "update keyring.call_key set created_at = now() - interval '40 days'
         where call_aggregate_id = 'partner-a:old'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        callingest::erasure::apply_retention(&app.pool, &calls)
            .await
            .unwrap(),
        0
    );

    sqlx::query("update partner set retention_days = 30 where partner_id = 'partner-a'")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        callingest::erasure::apply_retention(&app.pool, &calls)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        callingest::erasure::apply_retention(&app.pool, &calls)
            .await
            .unwrap(),
        0
    );

    let old = app.call_events("partner-a", "old").await;
    let accepted = &old[0].1["CallAccepted"]["call"];
    assert!(
        accepted["call"].get("contact_number").is_none(),
        "{accepted}"
    );
    assert!(accepted["customer"].get("name").is_none(), "{accepted}");
    let last = old.last().unwrap();
    assert_eq!(last.0, "PersonalDataErased");
    assert_eq!(last.1["PersonalDataErased"]["reason"], "retention");
    let new = app.call_events("partner-a", "new").await;
    assert_eq!(
        new[0].1["CallAccepted"]["call"]["call"]["contact_number"],
        "+447700900002"
    );
    assert_eq!(new.len(), 1);
}
