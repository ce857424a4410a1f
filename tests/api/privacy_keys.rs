//! Issue 16's operations on what is already stored: `privacy encrypt-existing` (events written
//! before sealing, sealed in place) and `privacy rotate-master-key`, run with the real binary.

use std::process::Output;
use std::time::Duration;

use callingest_domain::call::{CallEvent, Speaker, TranscriptProduced, TranscriptSegment};
use callingest_domain::interaction::TranscriptFigures;
use callingest_domain::personal::Personal;
use callingest_privacy::blind::Subject;
use callingest_privacy::{keyring, seal, MasterKey, Privacy};
use serde_json::{json, Value};
use sqlx::{ConnectOptions, PgPool};

use crate::helpers::instances::free_port;
use crate::helpers::{batch, published_item, wait_until, TestApp, TEST_MASTER_KEY};

/// The real binary against the app's database with these keys; its output, whatever the exit.
fn run(app: &TestApp, key: &str, previous: Option<&str>, args: &[&str]) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_callingest"));
    command
        .args(args)
        .env("DATABASE_URL", database_url(&app.pool))
        .env("CALLINGEST_MASTER_KEY", key)
        .env_remove("CALLINGEST_PREVIOUS_MASTER_KEY")
        .env("CALLINGEST_LOG", "warn");
    if let Some(previous) = previous {
        command.env("CALLINGEST_PREVIOUS_MASTER_KEY", previous);
    }
    command.output().unwrap()
}

/// [`run`], which must succeed: its stdout.
fn cli(app: &TestApp, key: &str, previous: Option<&str>, args: &[&str]) -> String {
    let output = run(app, key, previous, args);
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn database_url(pool: &PgPool) -> String {
    pool.connect_options().to_url_lossy().to_string()
}

/// A call item of `number` and customer `email`, agent `agent_email`.
fn item(id: &str, number: &str, email: &str, agent_email: &str) -> Value {
    let mut item = published_item();
    item["call"]["id"] = json!(id);
    item["call"]["contact_number"] = json!(number);
    item["customer"]["email"] = json!(email);
    item["agent"]["email"] = json!(agent_email);
    item
}

// ---------------------------------------------------------------------------------------------
// encrypt-existing

const OLD_NUMBER: &str = "+447700900111";
const OLD_OTHER_NUMBER: &str = "+447700900222";
const OLD_NAME: &str = "Olga Oldcall";
const OLD_EMAIL: &str = "olga.oldcall@example.org";
const OLD_WORDS: &str = "my account number is seven seven one";

/// A `CallAccepted` as the code before sealing stored it: the event of a real submission,
/// opened (every personal field in clear, no `sealed`), moved to another call id and subject.
fn clear_accepted(template: &Value, call_id: &str, number: &str, email: &str) -> Value {
    let mut event = template.clone();
    let accepted = &mut event["CallAccepted"];
    assert!(accepted.get("sealed").is_none(), "{accepted}");
    accepted["call"]["call"]["id"] = json!(call_id);
    accepted["call"]["call"]["contact_number"] = json!(number);
    accepted["call"]["customer"]["name"] = json!(OLD_NAME);
    accepted["call"]["customer"]["email"] = json!(email);
    // The shape is the event type's own.
    serde_json::from_value::<CallEvent>(event.clone()).expect("a CallAccepted");
    event
}

/// A `TranscriptProduced` as the code before sealing stored it.
fn clear_transcript() -> Value {
    let segments = vec![
        TranscriptSegment {
            channel: Speaker::Customer,
            start_ms: 0,
            end_ms: 2_500,
            text: OLD_WORDS.to_owned(),
        },
        TranscriptSegment {
            channel: Speaker::Agent,
            start_ms: 2_600,
            end_ms: 3_900,
            text: "thank you".to_owned(),
        },
    ];
    serde_json::to_value(CallEvent::TranscriptProduced(TranscriptProduced {
        attempt: 1,
        engine: "whisper".to_owned(),
        model: "ggml-tiny.en".to_owned(),
        language: "en".to_owned(),
        segment_count: 2,
        word_count: 9,
        segments: Personal::Clear(segments),
        produced_at: "2024-03-01T10:00:00Z".parse().unwrap(),
        figures: TranscriptFigures::default(),
        sealed: None,
    }))
    .unwrap()
}

async fn insert_event(pool: &PgPool, aggregate_id: &str, sequence: i64, payload: &Value) {
    let event_type = payload.as_object().unwrap().keys().next().unwrap().clone();
    let version = if event_type == "TranscriptProduced" {
        "2"
    } else {
        "1"
    };
    sqlx::query(
        "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         values ('Call', $1, $2, $3, $4, $5, '{\"request_id\": \"before-sealing\"}')",
    )
    .bind(aggregate_id)
    .bind(sequence)
    .bind(event_type)
    .bind(version)
    .bind(payload)
    .execute(pool)
    .await
    .unwrap();
}

/// Waits until every event is below the oldest transaction running on the server: only then
/// does a projection replay read them all (other tests' transactions hold it back meanwhile).
async fn wait_until_the_log_is_readable(pool: &PgPool) {
    wait_until(
        "every event below the oldest running transaction",
        Duration::from_secs(60),
        || async {
            sqlx::query_scalar(
                "select coalesce(max(tx_id) < pg_snapshot_xmin(pg_current_snapshot()), true)
                 from events",
            )
            .fetch_one(pool)
            .await
            .unwrap()
        },
    )
    .await;
}

/// Everything of every event row but the payload.
async fn event_rows(pool: &PgPool) -> Vec<Value> {
    sqlx::query_scalar(
        "select to_jsonb(e) - 'payload' || jsonb_build_object('tx_id', e.tx_id::text)
         from events e order by global_position",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn payloads(pool: &PgPool) -> String {
    let all: Vec<String> =
        sqlx::query_scalar("select payload::text from events order by global_position")
            .fetch_all(pool)
            .await
            .unwrap();
    all.join("\n")
}

/// The read models of the calls and transcripts, as analysts read them.
async fn read_models(pool: &PgPool) -> Vec<Value> {
    sqlx::query_scalar(
        "select * from (
             select to_jsonb(c) - 'updated_at' as row from call c
             union all select to_jsonb(t) from transcript t
             union all select to_jsonb(s) from transcript_segment s) r
         order by row::text",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn encrypt_existing_seals_clear_events_in_place_and_they_can_then_be_erased() {
    let app = TestApp::spawn().await;
    // A call of today (sealed already): its opened CallAccepted is the old stored form.
    app.submit(&batch(vec![published_item()])).await;
    let template = app.call_events("partner-a", "call123").await[0].1.clone();
    let sealed_before = app.stored_call_events("partner-a", "call123").await;

    // Three calls as the code before sealing wrote them, one with a transcript.
    let old = |n| format!("partner-a:old-{n}");
    let accepted = |n, number, email| clear_accepted(&template, &format!("old-{n}"), number, email);
    insert_event(&app.pool, &old(1), 1, &accepted(1, OLD_NUMBER, OLD_EMAIL)).await;
    insert_event(
        &app.pool,
        &old(1),
        2,
        &json!({"RecordingFetchStarted": {"attempt": 1, "started_at": "2024-03-01T09:59:00Z"}}),
    )
    .await;
    insert_event(&app.pool, &old(1), 3, &clear_transcript()).await;
    insert_event(
        &app.pool,
        &old(2),
        1,
        &accepted(2, OLD_NUMBER, "second@example.org"),
    )
    .await;
    insert_event(
        &app.pool,
        &old(3),
        1,
        &accepted(3, OLD_OTHER_NUMBER, "third@example.org"),
    )
    .await;
    for value in [OLD_NUMBER, OLD_NAME, OLD_EMAIL, "seven seven one"] {
        assert!(payloads(&app.pool).await.contains(value));
    }

    wait_until_the_log_is_readable(&app.pool).await;
    cli(&app, TEST_MASTER_KEY, None, &["projections", "rebuild"]);
    let models = read_models(&app.pool).await;
    assert_eq!(
        models.len(),
        7,
        "4 calls, a transcript of 2 segments: {models:?}"
    );
    assert!(models.iter().any(|m| m["text"]
        .as_str()
        .is_some_and(|t| t.contains("seven seven one"))));
    let rows = event_rows(&app.pool).await;
    let history = |call: &str| {
        let out = cli(
            &app,
            TEST_MASTER_KEY,
            None,
            &[
                "call",
                "history",
                "--partner",
                "partner-a",
                "--call",
                call,
                "--json",
            ],
        );
        serde_json::from_str::<Value>(&out).unwrap()
    };
    let histories: Vec<Value> = ["old-1", "old-2", "old-3", "call123"]
        .iter()
        .map(|c| history(c))
        .collect();
    assert_eq!(
        histories[0][0]["payload"]["call"]["call"]["contact_number"],
        OLD_NUMBER
    );

    // Two calls per transaction: several batches.
    let out = cli(
        &app,
        TEST_MASTER_KEY,
        None,
        &["privacy", "encrypt-existing", "--batch-calls", "2"],
    );
    let summary: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["calls_rewritten"], 3, "{summary}");
    assert_eq!(summary["events_rewritten"], 4, "{summary}");
    assert_eq!(summary["calls_skipped"], 0, "{summary}");

    // No clear value left; nothing but the payloads changed, and the call sealed already
    // was left alone.
    let stored = payloads(&app.pool).await;
    for value in [
        OLD_NUMBER,
        OLD_OTHER_NUMBER,
        OLD_NAME,
        OLD_EMAIL,
        "seven seven one",
    ] {
        assert!(!stored.contains(value), "{value} still in clear: {stored}");
    }
    assert_eq!(event_rows(&app.pool).await, rows);
    assert_eq!(
        app.stored_call_events("partner-a", "call123").await,
        sealed_before
    );
    let (first, last): (i64, i64) = sqlx::query_as(
        "select min(global_position), max(global_position) from events
         where aggregate_id like 'partner-a:old-%' and event_type <> 'RecordingFetchStarted'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        (
            summary["first_position"].clone(),
            summary["last_position"].clone()
        ),
        (json!(first), json!(last))
    );

    // Every reader reads the same as before: histories, and the read models rebuilt.
    let after: Vec<Value> = ["old-1", "old-2", "old-3", "call123"]
        .iter()
        .map(|c| history(c))
        .collect();
    assert_eq!(after, histories);
    cli(&app, TEST_MASTER_KEY, None, &["projections", "rebuild"]);
    assert_eq!(read_models(&app.pool).await, models);
    let parked = cli(
        &app,
        TEST_MASTER_KEY,
        None,
        &["projections", "failures", "--json"],
    );
    assert_eq!(serde_json::from_str::<Value>(&parked).unwrap(), json!([]));

    // The run is on record.
    let audit: (
        String,
        String,
        String,
        i64,
        i64,
        Option<i64>,
        Option<i64>,
        bool,
    ) = sqlx::query_as(
        "select kind, host, database_user, calls_rewritten, events_rewritten,
                    first_position, last_position, finished_at is not null
             from event_rewrite where run_id = $1",
    )
    .bind(summary["run_id"].as_i64().unwrap())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(audit.0, "encrypt-existing");
    assert!(!audit.1.is_empty());
    assert_eq!(audit.2, app.pool.connect_options().get_username());
    assert_eq!(
        (audit.3, audit.4, audit.5, audit.6, audit.7),
        (3, 4, Some(first), Some(last), true)
    );

    // Run again: nothing to do, nothing changed (the run itself is recorded, with zeros).
    let again: Value = serde_json::from_str(&cli(
        &app,
        TEST_MASTER_KEY,
        None,
        &["privacy", "encrypt-existing"],
    ))
    .unwrap();
    assert_eq!(
        (
            again["calls_rewritten"].clone(),
            again["events_rewritten"].clone()
        ),
        (json!(0), json!(0))
    );
    assert_ne!(again["run_id"], summary["run_id"]);
    assert_eq!(payloads(&app.pool).await, stored);

    // Outside the rewrite, events are still facts: no update, no delete, and the rewrite
    // itself can change nothing but a clear payload.
    let refused = |sql: &'static str| {
        let pool = app.pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            if sql.contains("/* rewrite */") {
                sqlx::query("set local callingest.rewrite = 'encrypt-existing'")
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
            let err = sqlx::query(sql).execute(&mut *tx).await.unwrap_err();
            assert!(
                err.to_string().contains("events are append-only"),
                "{sql}: {err}"
            );
        }
    };
    refused("update events set payload = payload where aggregate_id = 'partner-a:old-2'").await;
    refused("delete from events where aggregate_id = 'partner-a:old-2'").await;
    refused("/* rewrite */ delete from events where aggregate_id = 'partner-a:old-2'").await;
    // A sealed payload is never rewritten, not even by the rewrite.
    refused(
        "/* rewrite */ update events set payload = payload where aggregate_id = 'partner-a:old-2'",
    )
    .await;
    refused(
        "/* rewrite */ update events set sequence = sequence + 10, payload = payload
         where aggregate_id = 'partner-a:old-2'",
    )
    .await;

    // The rewritten calls can now be erased like the rest: by number.
    let keys: i64 = sqlx::query_scalar(
        "select count(*) from keyring.call_key where call_aggregate_id like 'partner-a:old-%'
         and contact_number_index is not null and customer_email_index is not null",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(keys, 3);
    let erased: Value = serde_json::from_str(&cli(
        &app,
        TEST_MASTER_KEY,
        None,
        &[
            "privacy",
            "erase",
            "--partner",
            "partner-a",
            "--phone-number",
            OLD_NUMBER,
        ],
    ))
    .unwrap();
    assert_eq!(erased["calls_erased"], 2, "{erased}");
    let old_1 = app.call_events("partner-a", "old-1").await;
    assert!(old_1[0].1["CallAccepted"]["call"]["call"]["contact_number"].is_null());
    assert!(
        old_1[2].1["TranscriptProduced"].get("segments").is_none(),
        "{:?}",
        old_1[2]
    );
    let old_3 = app.call_events("partner-a", "old-3").await;
    assert_eq!(
        old_3[0].1["CallAccepted"]["call"]["call"]["contact_number"],
        OLD_OTHER_NUMBER
    );
}

#[tokio::test]
async fn two_encrypt_existing_runs_at_once_seal_each_call_once() {
    let app = TestApp::spawn().await;
    app.submit(&batch(vec![published_item()])).await;
    let template = app.call_events("partner-a", "call123").await[0].1.clone();
    for n in 0..30 {
        let event = clear_accepted(&template, &format!("old-{n}"), OLD_NUMBER, OLD_EMAIL);
        insert_event(&app.pool, &format!("partner-a:old-{n}"), 1, &event).await;
    }
    let url = database_url(&app.pool);
    let runs: Vec<_> = (0..2)
        .map(|_| {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_callingest"))
                .args(["privacy", "encrypt-existing", "--batch-calls", "3"])
                .env("DATABASE_URL", &url)
                .env("CALLINGEST_MASTER_KEY", TEST_MASTER_KEY)
                .env_remove("CALLINGEST_PREVIOUS_MASTER_KEY")
                .env("CALLINGEST_LOG", "warn")
                .output()
        })
        .collect();
    let mut sealed = 0;
    for run in runs {
        let output = run.await.unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
        sealed += summary["calls_rewritten"].as_u64().unwrap();
    }
    assert_eq!(sealed, 30);
    assert!(!payloads(&app.pool).await.contains(OLD_NUMBER));
    let rows: i64 = sqlx::query_scalar(
        "select count(*) from keyring.call_key where call_aggregate_id like 'partner-a:old-%'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(rows, 30);
    for n in [0, 17, 29] {
        let opened = &app.call_events("partner-a", &format!("old-{n}")).await[0].1;
        assert_eq!(
            opened,
            &clear_accepted(&template, &format!("old-{n}"), OLD_NUMBER, OLD_EMAIL)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// rotate-master-key

/// The key rotated to in these tests (32 bytes of base64).
const NEW_MASTER_KEY: &str = "bmV3IG1hc3RlciBrZXkgb2YgY2FsbGluZ2VzdCAhISE=";
const NUMBER: &str = "+447700900333";
const EMAIL: &str = "rhea.rotated@example.org";
const AGENT_EMAIL: &str = "agent.rotated@example.org";

/// A `callingest serve` process (API and workers) of the test database.
struct Instance {
    /// Held: the process is killed when the instance is dropped.
    _child: tokio::process::Child,
    url: String,
}

impl Instance {
    async fn start(app: &TestApp, key: &str, previous: Option<&str>) -> Self {
        let port = free_port();
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_callingest"));
        command
            .arg("serve")
            .env("DATABASE_URL", database_url(&app.pool))
            .env("CALLINGEST_LISTEN", format!("127.0.0.1:{port}"))
            .env("CALLINGEST_ROLE", "api")
            .env("CALLINGEST_MASTER_KEY", key)
            .env_remove("CALLINGEST_PREVIOUS_MASTER_KEY")
            .env("CALLINGEST_LOG", "warn")
            .kill_on_drop(true);
        if let Some(previous) = previous {
            command.env("CALLINGEST_PREVIOUS_MASTER_KEY", previous);
        }
        let child = command.spawn().unwrap();
        let url = format!("http://127.0.0.1:{port}");
        wait_until(
            "the instance to be ready",
            Duration::from_secs(60),
            || async {
                app.client
                    .get(format!("{url}/readyz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            },
        )
        .await;
        Self { _child: child, url }
    }

    async fn post(&self, app: &TestApp, items: Vec<Value>) -> reqwest::StatusCode {
        app.client
            .post(format!("{}/api/v1/partner/ingest/batch-call", self.url))
            .header("x-partner-id", "partner-a")
            .header("x-api-key", &app.partner.api_key)
            .header("x-tenant-id", "tenant1")
            .header("x-sub-tenant-id", "subtenant1")
            .json(&batch(items))
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn calls_of_number(&self, app: &TestApp, number: &str) -> Value {
        app.client
            .get(format!("{}/api/v1/partner/data-privacy/calls", self.url))
            .query(&[("phone_number", number)])
            .header("x-partner-id", "partner-a")
            .header("x-api-key", &app.partner.api_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// `(call id, master key version, contact number index, agent e-mail index, call key)` of
/// every key row.
type Rows = Vec<(
    String,
    i32,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
)>;

async fn key_rows(pool: &PgPool) -> Rows {
    sqlx::query_as(
        "select call_aggregate_id, master_key_version, contact_number_index, agent_email_index,
                call_key
         from keyring.call_key order by call_aggregate_id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// One call's `CallAccepted` as `privacy` opens it.
async fn opened_call(pool: &PgPool, privacy: &Privacy, call: &str) -> Value {
    let id = format!("partner-a:{call}");
    let keys = keyring::load(pool, privacy, std::slice::from_ref(&id))
        .await
        .unwrap();
    let payload: Value = sqlx::query_scalar(
        "select payload from events where aggregate_id = $1 and event_type = 'CallAccepted'",
    )
    .bind(&id)
    .fetch_one(pool)
    .await
    .unwrap();
    let event = serde_json::from_value(payload).unwrap();
    let opened = seal::open_event(privacy, &id, event, keys.get(&id)).unwrap();
    serde_json::to_value(opened).unwrap()["CallAccepted"]["call"].clone()
}

#[tokio::test]
async fn rotating_the_master_key_rewraps_every_row_recomputes_the_indexes_and_retires_the_old_key()
{
    let app = TestApp::spawn().await;
    assert_eq!(
        app.post_batch(&batch(vec![
            item("rot-1", NUMBER, EMAIL, AGENT_EMAIL),
            item("rot-2", NUMBER, "other@example.org", "someone@example.org"),
            item(
                "rot-3",
                "+447700900444",
                "gone@example.org",
                "someone@example.org"
            ),
            item(
                "rot-4",
                "+447700900555",
                "kept@example.org",
                "agent.gone@example.org"
            ),
        ]))
        .await
        .status(),
        200
    );
    // Erased before the rotation: one call wholly, one call's agent.
    for (flag, subject) in [
        ("--phone-number", "+447700900444"),
        ("--email", "agent.gone@example.org"),
    ] {
        cli(
            &app,
            TEST_MASTER_KEY,
            None,
            &["privacy", "erase", "--partner", "partner-a", flag, subject],
        );
    }

    // 1. Every instance gets the new key and the previous one. The first records the new key;
    //    rows are still wrapped by the old one, so instances not yet given it read them all.
    let both = Instance::start(&app, NEW_MASTER_KEY, Some(TEST_MASTER_KEY)).await;
    let versions: Vec<(i32, bool)> =
        sqlx::query_as("select version, is_current from keyring.master_key order by version")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(versions, vec![(1, true), (2, false)]);
    assert_eq!(
        both.post(&app, vec![item("rot-5", NUMBER, EMAIL, AGENT_EMAIL)])
            .await,
        200
    );
    assert!(key_rows(&app.pool).await.iter().all(|r| r.1 == 1));
    cli(
        &app,
        TEST_MASTER_KEY,
        None,
        &[
            "call",
            "history",
            "--partner",
            "partner-a",
            "--call",
            "rot-5",
        ],
    );
    let refused = run(
        &app,
        NEW_MASTER_KEY,
        None,
        &[
            "call",
            "history",
            "--partner",
            "partner-a",
            "--call",
            "rot-1",
        ],
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("set CALLINGEST_PREVIOUS_MASTER_KEY"));
    let listed = both.calls_of_number(&app, NUMBER).await;
    assert_eq!(listed["calls"].as_array().unwrap().len(), 3, "{listed}");
    let before = key_rows(&app.pool).await;

    // 2. The rotation, while the instance holding both keys takes calls.
    let writer = {
        let (client, url, key) = (
            app.client.clone(),
            both.url.clone(),
            app.partner.api_key.clone(),
        );
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for n in 0..20 {
                let status = client
                    .post(format!("{url}/api/v1/partner/ingest/batch-call"))
                    .header("x-partner-id", "partner-a")
                    .header("x-api-key", &key)
                    .header("x-tenant-id", "tenant1")
                    .header("x-sub-tenant-id", "subtenant1")
                    .json(&batch(vec![item(
                        &format!("during-{n}"),
                        NUMBER,
                        EMAIL,
                        AGENT_EMAIL,
                    )]))
                    .send()
                    .await
                    .unwrap()
                    .status();
                statuses.push(status.as_u16());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            statuses
        })
    };
    let summary: Value = serde_json::from_str(&cli(
        &app,
        NEW_MASTER_KEY,
        Some(TEST_MASTER_KEY),
        &["privacy", "rotate-master-key"],
    ))
    .unwrap();
    let statuses = writer.await.unwrap();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(summary["rotated"], true, "{summary}");
    assert_eq!(summary["master_key_version"], 2);
    assert_eq!(summary["previous_version"], 1);
    assert!(
        summary["calls_rewrapped"].as_u64().unwrap() >= 5,
        "{summary}"
    );
    assert_eq!(
        both.post(&app, vec![item("rot-6", NUMBER, EMAIL, AGENT_EMAIL)])
            .await,
        200
    );

    // 3. The new key alone opens everything; the old key is forgotten.
    let versions: Vec<(i32, bool)> =
        sqlx::query_as("select version, is_current from keyring.master_key order by version")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(versions, vec![(2, true)]);
    let after = key_rows(&app.pool).await;
    assert_eq!(after.len(), 26);
    assert!(after.iter().all(|r| r.1 == 2), "{after:?}");
    let new_only =
        Privacy::with_versions((2, &MasterKey::from_base64(NEW_MASTER_KEY).unwrap()), None);
    for call in ["rot-1", "rot-5", "during-0", "during-19", "rot-6"] {
        let opened = opened_call(&app.pool, &new_only, call).await;
        assert_eq!(opened["call"]["contact_number"], NUMBER, "{call}: {opened}");
        assert_eq!(opened["agent"]["email"], AGENT_EMAIL, "{call}: {opened}");
    }
    let gone = opened_call(&app.pool, &new_only, "rot-3").await;
    assert!(gone["call"]["contact_number"].is_null(), "{gone}");
    let agent_gone = opened_call(&app.pool, &new_only, "rot-4").await;
    assert!(agent_gone["agent"]["name"].is_null(), "{agent_gone}");
    assert_eq!(agent_gone["customer"]["email"], "kept@example.org");
    let history = cli(
        &app,
        NEW_MASTER_KEY,
        None,
        &[
            "call",
            "history",
            "--partner",
            "partner-a",
            "--call",
            "rot-2",
            "--json",
        ],
    );
    assert!(history.contains(NUMBER), "{history}");
    let old_alone = run(
        &app,
        TEST_MASTER_KEY,
        None,
        &[
            "call",
            "history",
            "--partner",
            "partner-a",
            "--call",
            "rot-2",
        ],
    );
    assert!(!old_alone.status.success());
    assert!(
        String::from_utf8_lossy(&old_alone.stderr)
            .contains("CALLINGEST_MASTER_KEY is not the master key this database was sealed with"),
        "{}",
        String::from_utf8_lossy(&old_alone.stderr)
    );

    // The indexes were recomputed under the new index key (erased ones stay null), and the
    // data keys are the same keys, wrapped anew.
    let row = |rows: &Rows, call: &str| {
        rows.iter()
            .find(|r| r.0 == format!("partner-a:{call}"))
            .cloned()
            .unwrap()
    };
    let number_index = new_only.blind_index("partner-a", Subject::ContactNumber, NUMBER);
    assert_eq!(row(&after, "rot-1").2, Some(number_index));
    assert_ne!(row(&after, "rot-1").2, row(&before, "rot-1").2);
    assert_ne!(row(&after, "rot-1").4, row(&before, "rot-1").4);
    assert_eq!(
        (row(&after, "rot-3").2, row(&after, "rot-3").4),
        (None, None)
    );
    assert_eq!(row(&after, "rot-4").3, None);
    assert!(row(&after, "rot-4").2.is_some());

    // Erasure by number and e-mail finds the calls under the new indexes, with the new key
    // alone.
    let listed = cli(
        &app,
        NEW_MASTER_KEY,
        None,
        &[
            "privacy",
            "calls",
            "--partner",
            "partner-a",
            "--email",
            AGENT_EMAIL,
        ],
    );
    assert_eq!(listed.lines().count(), 23, "{listed}");
    assert!(listed.lines().all(|l| l.contains("\"agent\"")), "{listed}");
    let erased: Value = serde_json::from_str(&cli(
        &app,
        NEW_MASTER_KEY,
        None,
        &[
            "privacy",
            "erase",
            "--partner",
            "partner-a",
            "--phone-number",
            NUMBER,
        ],
    ))
    .unwrap();
    assert_eq!(erased["calls_erased"], 24, "{erased}");

    // 4. Run again: nothing to do, nothing changes.
    let erased_rows = key_rows(&app.pool).await;
    for previous in [Some(TEST_MASTER_KEY), None] {
        let again: Value = serde_json::from_str(&cli(
            &app,
            NEW_MASTER_KEY,
            previous,
            &["privacy", "rotate-master-key"],
        ))
        .unwrap();
        assert_eq!(again["rotated"], false, "{again}");
        assert_eq!(again["calls_rewrapped"], 0, "{again}");
    }
    assert_eq!(key_rows(&app.pool).await, erased_rows);
    drop(both);
}

/// The key-version checks of migration 0019 (a foreign key's guarantee, checked once per
/// statement): a key row naming a master key the keyring lacks is refused, in a batch as
/// alone, and a master key still wrapping rows cannot be deleted; both with SQLSTATE 23503,
/// which ingest and rotation handle.
#[tokio::test]
async fn key_rows_only_name_master_keys_the_keyring_holds() {
    let app = TestApp::spawn().await;
    app.submit(&batch(vec![published_item()])).await;
    let sqlstate = |result: Result<sqlx::postgres::PgQueryResult, sqlx::Error>| match result {
        Err(sqlx::Error::Database(e)) => e.code().map(|c| c.into_owned()),
        other => panic!("expected a database error, got {other:?}"),
    };

    let unknown_version = sqlx::query(
        "insert into keyring.call_key (call_aggregate_id, partner_id, master_key_version)
         select 'partner-x:' || n, 'partner-x', case when n = 3 then 7 else 1 end
         from generate_series(1, 5) n",
    )
    .execute(&app.pool)
    .await;
    assert_eq!(sqlstate(unknown_version).as_deref(), Some("23503"));
    let moved = sqlx::query("update keyring.call_key set master_key_version = 2")
        .execute(&app.pool)
        .await;
    assert_eq!(sqlstate(moved).as_deref(), Some("23503"));

    let in_use = sqlx::query("delete from keyring.master_key where version = 1")
        .execute(&app.pool)
        .await;
    assert_eq!(sqlstate(in_use).as_deref(), Some("23503"));
    let rows: i64 = sqlx::query_scalar("select count(*) from keyring.call_key")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows, 1, "nothing was written by the refused statements");
    let version: i32 = sqlx::query_scalar("select master_key_version from keyring.call_key")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(version, 1);
}
