//! Personal fields are sealed in the event log under per-call keys (issue 16).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use callingest::config::{Role, TranscriberKind, TranscriptionConfig};
use callingest::erasure::{self, Subject};
use callingest_domain::call::ErasureReason;
use serde_json::{json, Value};
use sqlx::ConnectOptions;

use crate::helpers::instances::free_port;
use crate::helpers::recording_server::RecordingServer;
use crate::helpers::{
    batch, json_body, published_item, test_workers, wait_until, TestApp, ADMIN_TOKEN,
    TEST_MASTER_KEY,
};

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
    app.submit(&batch(vec![published_item()])).await;

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
        app.submit(&batch(vec![published_item()])).await;
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

/// Waits until the `call` read model holds every call of `ids` in a final state (these calls
/// alone: `drain()` here waits about a minute longer for the queues to empty, see the report
/// of the harness branch).
async fn wait_until_finished(app: &TestApp, ids: &[&str]) {
    wait_until(
        "the calls to finish",
        Duration::from_secs(60),
        || async move {
            let finished: i64 = sqlx::query_scalar(
                "select count(*) from call where partner_id = 'partner-a' and call_id = any($1)
             and status in ('completed', 'failed')",
            )
            .bind(ids)
            .fetch_one(&app.pool)
            .await
            .unwrap();
            finished as usize == ids.len()
        },
    )
    .await;
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
    app.submit(&batch(items.clone())).await;
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
    app.submit(&batch(items)).await;
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

/// `POST /api/v1/partner/data-privacy/erase` of partner-a with `body`; the answer.
async fn erase(app: &TestApp, body: Value) -> Value {
    let response = app
        .client
        .post(app.url("/api/v1/partner/data-privacy/erase"))
        .header("x-partner-id", "partner-a")
        .header("x-api-key", &app.partner.api_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    json_body(response).await
}

/// The digest of the call's recording, from its `RecordingFetched` event.
async fn recording_sha256(app: &TestApp, call_id: &str) -> String {
    let events = app.call_events("partner-a", call_id).await;
    let (_, fetched) = events
        .iter()
        .find(|(t, _)| t == "RecordingFetched")
        .expect("the recording was fetched");
    fetched["RecordingFetched"]["sha256"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Where a spool keeps the recording with this digest.
fn spooled(spool: &Path, sha256: &str) -> PathBuf {
    spool.join(format!("{sha256}.recording"))
}

/// Waits (bounded) until `path` is gone.
async fn wait_until_gone(path: &Path, within: Duration) {
    let what = format!("{} to be deleted", path.display());
    wait_until(&what, within, || async { !path.exists() }).await;
}

#[tokio::test]
async fn an_erased_calls_spooled_recording_is_deleted_within_seconds_and_its_row_expires() {
    let spool = tempfile::tempdir().unwrap();
    let mut processing = test_workers();
    processing.transcription.spool_dir = Some(spool.path().to_path_buf());
    let app = TestApp::builder()
        .role(Role::All)
        .workers(processing)
        .spawn()
        .await;
    let recordings = RecordingServer::start().await;
    let items = vec![
        subject_item(
            "spooled-erased",
            "+447700900321",
            "Spooled Subject",
            "spooled@example.org",
            &recordings.url("/files/silence.wav"),
        ),
        subject_item(
            "spooled-kept",
            "+447700900654",
            "Kept Subject",
            "kept@example.org",
            &recordings.url("/files/left-only.wav"),
        ),
    ];
    app.submit(&batch(items)).await;
    wait_until_finished(&app, &["spooled-erased", "spooled-kept"]).await;
    // Both recordings left in the spool, as by an instance that analysed the calls while
    // another transcribed them (the spool alone would keep them for a day).
    let erased = spooled(
        spool.path(),
        &recording_sha256(&app, "spooled-erased").await,
    );
    let kept = spooled(spool.path(), &recording_sha256(&app, "spooled-kept").await);
    assert_ne!(erased, kept);
    std::fs::write(&erased, b"the subject's voice").unwrap();
    std::fs::write(&kept, b"someone else's voice").unwrap();

    let answer = erase(&app, json!({"phone_number": "+447700900321"})).await;
    assert_eq!(answer["call_ids"], json!(["spooled-erased"]), "{answer}");
    wait_until_gone(&erased, Duration::from_secs(10)).await;
    assert!(kept.exists(), "the other call's recording is kept");

    // The row is kept as long as a spool could hold the file (a day and an hour), no longer.
    assert_eq!(
        erasure::follow_up::expire_erased_recordings(&app.pool)
            .await
            .unwrap(),
        0
    );
    sqlx::query("update erased_recording set erased_at = now() - interval '26 hours'")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        erasure::follow_up::expire_erased_recordings(&app.pool)
            .await
            .unwrap(),
        1
    );
}

/// The whole service with a spool of its own (returned) and the OpenAI-compatible engine at
/// `engine_url`: analysed calls are handed over to transcription through the spool.
async fn app_handing_over(engine_url: String) -> (TestApp, PathBuf) {
    let spool = tempfile::tempdir().unwrap().keep();
    let mut processing = test_workers();
    processing.transcription = TranscriptionConfig {
        transcriber: TranscriberKind::Openai,
        url: Some(engine_url),
        max_attempts: 1,
        backoff_base: Duration::from_millis(100),
        spool_dir: Some(spool.clone()),
        ..TranscriptionConfig::default()
    };
    (
        TestApp::builder()
            .role(Role::All)
            .workers(processing)
            .spawn()
            .await,
        spool,
    )
}

#[tokio::test]
async fn a_recording_fetched_while_its_call_is_erased_is_neither_spooled_nor_transcribed() {
    // Nothing answers for the engine: the call must not get that far.
    let (app, spool) = app_handing_over(format!("http://127.0.0.1:{}", free_port())).await;
    let recordings = RecordingServer::start().await;
    // The host answers after 4 s: the erasure comes while the download is in flight.
    let item = subject_item(
        "in-flight",
        "+447700900777",
        "Flight Subject",
        "flight@example.org",
        &recordings.url("/delay/4000/overlap.wav"),
    );
    app.submit(&batch(vec![item])).await;
    wait_until("the fetch to start", Duration::from_secs(30), || async {
        recordings.hits.load(Ordering::SeqCst) > 0
    })
    .await;
    let answer = erase(&app, json!({"phone_number": "+447700900777"})).await;
    assert_eq!(answer["calls_erased"], 1, "{answer}");

    let call = app.final_row("in-flight").await;
    assert_eq!(call["status"], "completed", "{call}");
    assert!(
        call["agent_talk_ms"].as_i64().is_some(),
        "analytics kept: {call}"
    );
    let types = app.event_types("in-flight").await;
    assert!(types.contains(&"RecordingFetched".to_owned()), "{types:?}");
    assert!(
        !types.iter().any(|t| t.starts_with("Transcri")),
        "an erased call is not transcribed: {types:?}"
    );
    let events = app.call_events("partner-a", "in-flight").await;
    let (_, analysed) = events
        .iter()
        .find(|(t, _)| t == "RecordingAnalyzed")
        .unwrap();
    assert_eq!(analysed["RecordingAnalyzed"]["transcription_due"], false);
    let left: Vec<_> = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left in the spool: {left:?}");
}

/// A speech-to-text service on 127.0.0.1 (OpenAI's `verbose_json` answer) that takes 3 s to
/// hear `words` in every piece it is sent; the base URL and its request count.
async fn slow_transcription_service(words: &'static str) -> (String, Arc<AtomicUsize>) {
    use poem::listener::{Acceptor, Listener, TcpListener};
    use poem::web::{Data, Json};
    use poem::{handler, post, EndpointExt, Route, Server};

    #[handler]
    async fn transcribe(
        body: poem::Body,
        state: Data<&(Arc<AtomicUsize>, &'static str)>,
    ) -> Json<Value> {
        let (requests, words) = state.0;
        requests.fetch_add(1, Ordering::SeqCst);
        let _ = body.into_bytes().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        Json(json!({"language": "en", "text": words,
                    "segments": [{"start": 0.0, "end": 1.0, "text": words}]}))
    }
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .unwrap();
    let address = *acceptor.local_addr()[0].as_socket_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let routes = Route::new()
        .at("/v1/audio/transcriptions", post(transcribe))
        .data((requests.clone(), words));
    tokio::spawn(Server::new_with_acceptor(acceptor).run(routes));
    (format!("http://{address}"), requests)
}

#[tokio::test]
async fn a_call_erased_while_it_is_transcribed_gets_no_transcript() {
    const SAID: &str = "my parcel tracking code is zebra seven";
    let (engine, requests) = slow_transcription_service(SAID).await;
    let (app, spool) = app_handing_over(engine).await;
    let recordings = RecordingServer::start().await;
    let item = subject_item(
        "heard",
        "+447700900888",
        "Heard Subject",
        "heard@example.org",
        &recordings.url("/files/overlap.wav"),
    );
    app.submit(&batch(vec![item])).await;
    wait_until(
        "the transcription to start",
        Duration::from_secs(30),
        || async { requests.load(Ordering::SeqCst) > 0 },
    )
    .await;
    let answer = erase(&app, json!({"phone_number": "+447700900888"})).await;
    assert_eq!(answer["calls_erased"], 1, "{answer}");

    let call = app.final_row("heard").await;
    assert_eq!(call["status"], "completed", "{call}");
    assert_eq!(call["transcription_status"], "unavailable", "{call}");
    let events = app.call_events("partner-a", "heard").await;
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert!(!types.contains(&"TranscriptProduced"), "{types:?}");
    let (_, failed) = events
        .iter()
        .find(|(t, _)| t == "TranscriptionFailed")
        .expect("the attempt failed");
    assert_eq!(
        failed["TranscriptionFailed"]["error"],
        "not transcribed: the call's personal data was erased"
    );
    assert_eq!(failed["TranscriptionFailed"]["retryable"], false);
    let transcript = app
        .client
        .get(app.url("/api/v1/partner/calls/heard/transcript"))
        .header("x-partner-id", "partner-a")
        .header("x-api-key", &app.partner.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(transcript.status(), 404);
    assert!(!pg_dump(&app).contains("zebra"));
    let left: Vec<_> = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left in the spool: {left:?}");
}

/// How many `PersonalDataErased` events each of these calls has.
async fn erasure_events(app: &TestApp, ids: &[&str]) -> Vec<usize> {
    let mut counts = Vec::new();
    for id in ids {
        let types = app.event_types(id).await;
        counts.push(types.iter().filter(|t| *t == "PersonalDataErased").count());
    }
    counts
}

#[tokio::test]
async fn an_erasure_interrupted_before_its_events_gets_each_event_exactly_once_after_restart() {
    let app = TestApp::spawn().await;
    let items = vec![
        subject_item(
            "crash-1",
            "+447700900555",
            "Crash Subject",
            "crash@example.org",
            "https://r.invalid/a.wav",
        ),
        subject_item(
            "crash-2",
            "+447700900555",
            "Crash Subject",
            "crash@example.org",
            "https://r.invalid/b.wav",
        ),
        subject_item(
            "crash-3",
            "+447700900556",
            "Another Subject",
            "another@example.org",
            "https://r.invalid/c.wav",
        ),
    ];
    app.submit(&batch(items)).await;

    // The erasure's transaction, then a crash before any event is recorded.
    let subject = Subject::PhoneNumber("+447700900555".into());
    let (erased, pending) = erasure::destroy_keys(
        &app.pool,
        &app.privacy,
        "partner-a",
        &subject,
        ErasureReason::Request,
    )
    .await
    .unwrap();
    assert_eq!(erased.call_ids(), ["crash-1", "crash-2"]);
    assert_eq!(pending.len(), 2);
    assert_eq!(erasure_events(&app, &["crash-1", "crash-2"]).await, [0, 0]);
    // The erasure stands: the fields read as erased already.
    let accepted = &app.call_events("partner-a", "crash-1").await[0].1["CallAccepted"]["call"];
    assert!(
        accepted["call"].get("contact_number").is_none(),
        "{accepted}"
    );

    // The other crash point for crash-2: its event appended (as the follow-up appends it,
    // naming its pending row) but the row not deleted yet.
    let calls = callingest::event_store::store(app.pool.clone(), &app.privacy);
    let metadata = std::collections::HashMap::from([
        ("erasure".to_owned(), "request".to_owned()),
        ("erasure_id".to_owned(), pending[1].to_string()),
    ]);
    callingest::event_store::execute(
        &calls,
        "partner-a:crash-2",
        callingest_domain::call::CallCommand::RecordErasure {
            scope: callingest_domain::call::ErasureScope::Call,
            reason: ErasureReason::Request,
            at: chrono::Utc::now(),
        },
        &metadata,
    )
    .await
    .unwrap();

    // A worker process records what is missing when it starts, and only that.
    let app = app.restart_as(Role::All).await;
    wait_until(
        "no erasure event left pending",
        Duration::from_secs(30),
        || async {
            let left: i64 = sqlx::query_scalar("select count(*) from erasure_event_pending")
                .fetch_one(&app.pool)
                .await
                .unwrap();
            left == 0
        },
    )
    .await;
    assert_eq!(erasure_events(&app, &["crash-1", "crash-2"]).await, [1, 1]);
    let events = app.call_events("partner-a", "crash-1").await;
    let (_, recorded) = events
        .iter()
        .find(|(t, _)| t == "PersonalDataErased")
        .unwrap();
    assert_eq!(recorded["PersonalDataErased"]["scope"], "call");
    assert_eq!(recorded["PersonalDataErased"]["reason"], "request");

    // Passes racing over the same rows (two by hand, the worker's own) record each once.
    let subject = Subject::PhoneNumber("+447700900556".into());
    let (_, pending) = erasure::destroy_keys(
        &app.pool,
        &app.privacy,
        "partner-a",
        &subject,
        ErasureReason::Request,
    )
    .await
    .unwrap();
    assert_eq!(pending.len(), 1);
    let (a, b) = tokio::join!(
        erasure::follow_up::record_missing_events(&app.pool, &calls),
        erasure::follow_up::record_missing_events(&app.pool, &calls),
    );
    assert!(a.unwrap() + b.unwrap() <= 1);
    wait_until(
        "crash-3 to get its event",
        Duration::from_secs(30),
        || async { erasure_events(&app, &["crash-3"]).await == [1] },
    )
    .await;
    assert_eq!(
        erasure::follow_up::record_missing_events(&app.pool, &calls)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        erasure_events(&app, &["crash-1", "crash-2", "crash-3"]).await,
        [1, 1, 1]
    );
}

#[cfg(feature = "whisper")]
mod with_whisper {
    use super::*;
    use poem::listener::{Acceptor, Listener, TcpListener};
    use poem::{Response, Route, Server};

    use crate::helpers::speech_clips as speech;

    /// What the subject says on the erased call, and what the other caller says.
    const SUBJECT_SAYS: &str =
        "Hello, my washing machine is broken and the kitchen floor is covered in water.";
    const OTHER_SAYS: &str =
        "Good morning, I would like to pay the electricity bill for my garden house.";

    /// A mono WAV of `text` spoken (espeak-ng) with a little noise around it.
    fn spoken(text: &str) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let voice = speech::speak(text, dir.path());
        let gap = speech::samples(0.5);
        let mut samples = speech::noise(gap + voice.len() + gap, 0.002, 1);
        speech::place(&mut samples, gap, &voice);
        let path = dir.path().join("call.wav");
        speech::write_wav(&path, &[samples]);
        std::fs::read(path).unwrap()
    }

    /// Serves each `(name, bytes)` at `/{name}` on a loopback port; the base address.
    async fn serve(files: Vec<(&'static str, Vec<u8>)>) -> String {
        let mut routes = Route::new();
        for (name, bytes) in files {
            routes = routes.at(
                format!("/{name}"),
                poem::endpoint::make_sync(move |_| {
                    Response::builder()
                        .content_type("audio/wav")
                        .body(bytes.clone())
                }),
            );
        }
        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .unwrap();
        let address = *acceptor.local_addr()[0].as_socket_addr().unwrap();
        tokio::spawn(Server::new_with_acceptor(acceptor).run(routes));
        format!("http://{address}")
    }

    async fn transcript_text(app: &TestApp, call_id: &str) -> String {
        app.client
            .get(app.url(&format!("/api/v1/partner/calls/{call_id}/transcript")))
            .header("x-partner-id", "partner-a")
            .header("x-api-key", &app.partner.api_key)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .to_lowercase()
    }

    /// The support page of a call, as a signed-in support engineer gets it (plain HTTP).
    async fn support_page(app: &TestApp, call_id: &str) -> String {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let signed_in = client
            .post(app.url("/support/login"))
            .form(&[("token", ADMIN_TOKEN)])
            .send()
            .await
            .unwrap();
        let cookie = signed_in.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let page = client
            .get(app.url(&format!("/support?partner=partner-a&call={call_id}")))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        page.text().await.unwrap()
    }

    #[tokio::test]
    async fn an_erased_transcribed_call_shows_nothing_of_its_subject_anywhere_and_leaves_no_spooled_recording(
    ) {
        let spool = tempfile::tempdir().unwrap();
        let mut processing = test_workers();
        processing.transcription = TranscriptionConfig {
            transcriber: TranscriberKind::Whisper,
            whisper_model: Some(speech::model_path()),
            max_attempts: 2,
            backoff_base: Duration::from_millis(100),
            spool_dir: Some(spool.path().to_path_buf()),
            ..TranscriptionConfig::default()
        };
        let app = TestApp::builder()
            .role(Role::All)
            .workers(processing)
            .spawn()
            .await;
        let host = serve(vec![
            ("subject.wav", spoken(SUBJECT_SAYS)),
            ("other.wav", spoken(OTHER_SAYS)),
        ])
        .await;
        let (number, name, email) = ("+447700900123", "Erin Subject", "erin.subject@example.org");
        let items = vec![
            subject_item("said", number, name, email, &format!("{host}/subject.wav")),
            subject_item(
                "other-said",
                "+447700900999",
                "Kept Person",
                "kept@example.org",
                &format!("{host}/other.wav"),
            ),
        ];
        app.submit(&batch(items)).await;
        for id in ["said", "other-said"] {
            let call = app.final_row_within(id, Duration::from_secs(180)).await;
            assert_eq!(call["transcription_status"], "available", "{call}");
        }

        // What whisper heard the subject say (its longer words, none of which the other call
        // holds): found in the transcript now, to be found nowhere after the erasure.
        let heard = transcript_text(&app, "said").await;
        let other_heard = transcript_text(&app, "other-said").await;
        let said: Vec<String> = SUBJECT_SAYS
            .to_lowercase()
            .split(|c: char| !c.is_alphabetic())
            .filter(|w| w.len() >= 6 && heard.contains(w) && !other_heard.contains(w))
            .map(str::to_owned)
            .collect();
        assert!(said.len() >= 3, "whisper heard too little: {heard}");
        let other_said: Vec<String> = OTHER_SAYS
            .to_lowercase()
            .split(|c: char| !c.is_alphabetic())
            .filter(|w| w.len() >= 6 && other_heard.contains(w))
            .map(str::to_owned)
            .collect();
        assert!(!other_said.is_empty(), "{other_heard}");
        let page = support_page(&app, "said").await.to_lowercase();
        assert!(said.iter().all(|w| page.contains(w.as_str())), "{page}");

        // Both recordings left in the spool, as by an instance whose calls another instance
        // transcribed.
        let erased_file = spooled(spool.path(), &recording_sha256(&app, "said").await);
        let kept_file = spooled(spool.path(), &recording_sha256(&app, "other-said").await);
        std::fs::write(&erased_file, spoken(SUBJECT_SAYS)).unwrap();
        std::fs::write(&kept_file, spoken(OTHER_SAYS)).unwrap();

        let answer = erase(&app, json!({"phone_number": number})).await;
        assert_eq!(answer["call_ids"], json!(["said"]), "{answer}");
        wait_until_gone(&erased_file, Duration::from_secs(10)).await;
        assert!(kept_file.exists());

        let traces = |text: &str| -> Vec<String> {
            let text = text.to_lowercase();
            [number, "7700900123", name, email]
                .iter()
                .map(|t| t.to_lowercase())
                .chain(said.iter().cloned())
                .filter(|t| text.contains(t.as_str()))
                .collect()
        };
        let transcript = transcript_text(&app, "said").await;
        assert!(traces(&transcript).is_empty(), "{transcript}");
        let page = support_page(&app, "said").await;
        assert!(page.contains("PersonalDataErased"), "{page}");
        assert!(traces(&page).is_empty(), "{:?} in {page}", traces(&page));
        let call = get(&app, "/api/v1/partner/calls/said").await;
        assert!(traces(&call.to_string()).is_empty(), "{call}");
        let history = get(&app, "/api/v1/partner/calls/said/events").await;
        assert!(traces(&history.to_string()).is_empty(), "{history}");

        // The other call keeps its data, on its page and in its transcript.
        let other_page = support_page(&app, "other-said").await;
        assert!(other_page.contains("Kept Person"), "{other_page}");
        assert!(other_page.contains("+447700900999"), "{other_page}");
        let other_page = other_page.to_lowercase();
        assert!(
            other_said.iter().all(|w| other_page.contains(w.as_str())),
            "{other_page}"
        );
        let other_transcript = transcript_text(&app, "other-said").await;
        assert!(other_said
            .iter()
            .all(|w| other_transcript.contains(w.as_str())));

        let dump = pg_dump(&app);
        assert!(
            traces(&dump).is_empty(),
            "found {:?} in pg_dump",
            traces(&dump)
        );
    }
}
