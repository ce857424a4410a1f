//! A bad event never stops a projection for everyone: it is parked (recorded, listed, counted),
//! the later events of its call are held behind it, every other call goes on, and a retry
//! applies them in order once the cause is gone.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::ConnectOptions;
use tokio::process::Command;

use crate::helpers::recording_server::RecordingServer;
use crate::helpers::{batch, item, TestApp, ADMIN_TOKEN};

/// The projections that decode every `Call` event (`transcripts` only reads transcripts).
const CALL_READERS: [&str; 3] = ["callback_deliveries", "processing_jobs", "read_models"];

fn database_url(app: &TestApp) -> String {
    app.pool.connect_options().to_url_lossy().to_string()
}

/// Runs the real binary against the app's database; returns its stdout (asserting success).
/// Awaited, not blocking: the app's projectors share this test's runtime, and one frozen in
/// the middle of a page would hold the checkpoint lock the command waits for.
async fn callingest(app: &TestApp, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_callingest"))
        .env("CALLINGEST_MASTER_KEY", crate::helpers::TEST_MASTER_KEY)
        .args(args)
        .env("DATABASE_URL", database_url(app))
        .output()
        .await
        .expect("callingest runs");
    assert!(
        output.status.success(),
        "callingest {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Appends an event to a call's stream as a writer would (the next sequence is the caller's).
async fn append(
    app: &TestApp,
    aggregate_id: &str,
    sequence: i64,
    event_type: &str,
    payload: Value,
) {
    sqlx::query(
        "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         values ('Call', $1, $2, $3, '1', $4, '{}')",
    )
    .bind(aggregate_id)
    .bind(sequence)
    .bind(event_type)
    .bind(payload)
    .execute(&app.pool)
    .await
    .unwrap();
}

/// `(projection, sequence, held_behind is null)` of an aggregate's parked events.
async fn parked_of(app: &TestApp, aggregate_id: &str) -> Vec<(String, i64, bool)> {
    sqlx::query_as(
        "select projection, sequence, held_behind is null from projection_failure
         where aggregate_id = $1 order by projection, sequence",
    )
    .bind(aggregate_id)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// Once the projections applied the whole log, the aggregate's parked events are `expected`.
async fn assert_parked(app: &TestApp, aggregate_id: &str, expected: &[(String, i64, bool)]) {
    app.drain().await;
    assert_eq!(
        parked_of(app, aggregate_id).await,
        expected,
        "parked events of {aggregate_id}"
    );
}

async fn metrics(app: &TestApp) -> String {
    app.client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_undecodable_event_is_parked_with_the_calls_later_events_and_other_calls_complete() {
    let app = TestApp::spawn_processing().await;
    let recordings = RecordingServer::start().await;
    // Partner X's call: an acceptance of the wrong shape, then a well-formed outcome that
    // would schedule a callback if it were applied out of order.
    let bad = "partner-x:bad-call";
    append(
        &app,
        bad,
        1,
        "CallAccepted",
        json!({"CallAccepted": {"call": 42}}),
    )
    .await;
    append(
        &app,
        bad,
        2,
        "ProcessingFailed",
        json!({"ProcessingFailed": {
            "failed_at": "2026-01-01T00:00:00Z",
            "callback_due": true,
            "processing_time_ms": 10,
            "reason": "never applied"
        }}),
    )
    .await;

    // Another partner's call submitted afterwards goes all the way through.
    let url = recordings.url("/files/left-only.wav");
    assert_eq!(
        app.post_batch(&batch(vec![item("after-the-bad-one", &url)]))
            .await
            .status(),
        200
    );
    let started = Instant::now();
    let row = app.final_row("after-the-bad-one").await;
    assert_eq!(row["status"], "completed", "{row}");
    assert!(started.elapsed() < Duration::from_secs(20));

    // Parked in every projection that decodes call events, the outcome held behind it.
    let expected: Vec<(String, i64, bool)> = CALL_READERS
        .iter()
        .flat_map(|p| [(p.to_string(), 1, true), (p.to_string(), 2, false)])
        .collect();
    assert_parked(&app, bad, &expected).await;
    let (error, held_behind_ok): (String, bool) = sqlx::query_as(
        "select f.error, h.held_behind = f.global_position
         from projection_failure f join projection_failure h
           on h.projection = f.projection and h.aggregate_id = f.aggregate_id and h.sequence = 2
         where f.projection = 'read_models' and f.aggregate_id = $1 and f.sequence = 1",
    )
    .bind(bad)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(error.contains("CallAccepted"), "{error}");
    assert!(held_behind_ok);
    // Nothing of the bad call was applied, in particular not its later outcome.
    let applied: i64 = sqlx::query_scalar(
        "select (select count(*) from callback_delivery where call_aggregate_id = $1)
              + (select count(*) from processing_job where call_aggregate_id = $1)
              + (select count(*) from call where partner_id = 'partner-x')",
    )
    .bind(bad)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(applied, 0);

    // Listed by the CLI, as JSON and as a table.
    let listed: Vec<Value> =
        serde_json::from_str(&callingest(&app, &["projections", "failures", "--json"]).await)
            .unwrap();
    assert_eq!(listed.len(), 6, "{listed:?}");
    assert!(listed.iter().all(|p| p["aggregate_id"] == bad));
    let first = &listed[0];
    assert_eq!(first["projection"], "callback_deliveries");
    assert_eq!(first["event_type"], "CallAccepted");
    assert_eq!(first["held_behind"], Value::Null);
    assert_eq!(listed[1]["held_behind"], first["global_position"]);
    let table = callingest(
        &app,
        &["projections", "failures", "--projection", "read_models"],
    )
    .await;
    assert_eq!(table.lines().count(), 3, "{table}");
    assert!(table.contains("CallAccepted") && table.contains("failed: "));
    assert!(table.contains(&format!("held behind {}", first["global_position"])));

    // Listed by the admin API, to support staff only.
    let path = "/api/v1/admin/projection-failures";
    let denied = app.client.get(app.url(path)).send().await.unwrap();
    assert_eq!(denied.status(), 403);
    let answer = app
        .client
        .get(app.url(&format!("{path}?projection=processing_jobs")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.unwrap();
    let failures = body["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 2, "{body}");
    assert_eq!(failures[0]["projection"], "processing_jobs");
    assert_eq!(failures[0]["aggregate_id"], bad);
    assert_eq!(failures[0]["event_type"], "CallAccepted");
    assert_eq!(failures[1]["event_type"], "ProcessingFailed");
    assert_eq!(failures[1]["held_behind"], failures[0]["global_position"]);
    assert_eq!(body["truncated"], false);
    let limited: Value = app
        .client
        .get(app.url(&format!("{path}?limit=1")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(limited["failures"].as_array().unwrap().len(), 1);
    assert_eq!(limited["truncated"], true);
    let unknown = app
        .client
        .get(app.url(&format!("{path}?projection=nope")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);

    // Counted and measured.
    let metrics = metrics(&app).await;
    for projection in CALL_READERS {
        assert!(
            metrics.contains(&format!(
                "callingest_projection_failures_total{{projection=\"{projection}\"}}"
            )),
            "{metrics}"
        );
        assert!(
            metrics.contains(&format!(
                "callingest_projection_parked_events{{projection=\"{projection}\"}}"
            )),
            "{metrics}"
        );
    }

    // The code still cannot read it: a retry keeps every row.
    let retried = callingest(&app, &["projections", "retry", "read_models"]).await;
    let retried: Value = serde_json::from_str(retried.trim()).unwrap();
    assert_eq!(
        retried,
        json!({"projection": "read_models", "applied": 0, "still_parked": 2})
    );
    // The same over the admin API, for every projection.
    let retry_path = "/api/v1/admin/projection-failures/retry";
    let denied = app.client.post(app.url(retry_path)).send().await.unwrap();
    assert_eq!(denied.status(), 403);
    let answer = app
        .client
        .post(app.url(retry_path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.unwrap();
    let outcomes: Vec<(String, u64, u64)> = body["projections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["projection"].as_str().unwrap().to_owned(),
                p["applied"].as_u64().unwrap(),
                p["still_parked"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("read_models".to_owned(), 0, 2),
            ("processing_jobs".to_owned(), 0, 2),
            ("callback_deliveries".to_owned(), 0, 2),
            ("transcripts".to_owned(), 0, 0),
        ]
    );
    // A rebuild clears the projection's rows and parks again what still fails (the live
    // projector finishes the replay if other databases of the cluster held the rebuild back).
    let before_rebuild: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("select max(failed_at) from projection_failure")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    callingest(&app, &["projections", "rebuild", "read_models"]).await;
    assert_parked(&app, bad, &expected).await;
    let reparked: Vec<String> = sqlx::query_scalar(
        "select distinct projection from projection_failure where failed_at > $1",
    )
    .bind(before_rebuild)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(reparked, ["read_models"]);
    assert_eq!(
        app.final_row("after-the-bad-one").await["status"],
        "completed"
    );
    // The event log was never touched.
    assert_eq!(app.call_events("partner-x", "bad-call").await.len(), 2);
}

#[tokio::test]
async fn a_parked_event_and_those_held_behind_it_apply_in_order_on_retry() {
    let app = TestApp::spawn_processing().await;
    let recordings = RecordingServer::start().await;
    // A fault the test can remove: the `call` row of one call cannot record a fetch.
    sqlx::raw_sql(
        "create function refuse_blocked_fetch() returns trigger language plpgsql as $$
         begin
             if new.call_id = 'blocked' and new.fetch_started_at is not null then
                 raise exception 'refused for the test';
             end if;
             return new;
         end;
         $$;
         create trigger refuse_blocked_fetch before insert or update on call
             for each row execute function refuse_blocked_fetch();",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let url = recordings.url("/files/left-only.wav");
    assert_eq!(
        app.post_batch(&batch(vec![item("blocked", &url), item("free", &url)]))
            .await
            .status(),
        200
    );

    // Processing goes on (only the read model is refused), and so does the read model for
    // the other call.
    assert_eq!(app.final_row("free").await["status"], "completed");
    let read_models = |sequence, failed| ("read_models".to_owned(), sequence, failed);
    // 1 CallAccepted applied, 2 RecordingFetchStarted failed, 3..5 held behind it.
    let expected = vec![
        read_models(2, true),
        read_models(3, false),
        read_models(4, false),
        read_models(5, false),
    ];
    assert_parked(&app, "partner-a:blocked", &expected).await;
    let events: Vec<String> = app
        .call_events("partner-a", "blocked")
        .await
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(events[1], "RecordingFetchStarted");
    assert_eq!(events.last().unwrap(), "ProcessingCompleted");
    // The read model stopped where the failure is: the completion was not applied before it.
    let status: String = sqlx::query_scalar("select status from call where call_id = 'blocked'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(status, "accepted");

    sqlx::raw_sql("drop trigger refuse_blocked_fetch on call")
        .execute(&app.pool)
        .await
        .unwrap();
    let retried = callingest(&app, &["projections", "retry", "read_models"]).await;
    let retried: Value = serde_json::from_str(retried.trim()).unwrap();
    assert_eq!(
        retried,
        json!({"projection": "read_models", "applied": 4, "still_parked": 0})
    );

    assert_eq!(parked_of(&app, "partner-a:blocked").await, vec![]);
    let row = app.final_row("blocked").await;
    assert_eq!(row["status"], "completed", "{row}");
    assert_eq!(row["fetch_attempts"], 1);
    assert_eq!(row["recording_format"], "wav");
    assert_eq!(row["recording_duration_ms"], 4_000);
    // The batch counts caught up too: both calls completed.
    let completed: i32 = sqlx::query_scalar("select completed_count from batch")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(completed, 2);
    // Listing now finds nothing.
    assert_eq!(
        callingest(&app, &["projections", "failures"]).await.trim(),
        "no parked events"
    );
}
