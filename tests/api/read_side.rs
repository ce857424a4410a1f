//! The read side: partners' status APIs, support's audit tools, analysts' tables and queries.

use std::process::Command;
use std::sync::Arc;

use callingest::partners::{create_partner, PartnerCredentials};
use callingest_projections::read_models::ReadModels;
use callingest_projections::Projector;
use serde_json::{json, Value};

use crate::helpers::projectors::catch_up_until;
use crate::helpers::recording_server::RecordingServer;
use crate::helpers::{as_analyst, batch, item, item_with_id, TestApp, ADMIN_TOKEN};

fn get_as(app: &TestApp, partner: &PartnerCredentials, path: &str) -> reqwest::RequestBuilder {
    app.client
        .get(app.url(path))
        .header("x-partner-id", &partner.partner_id)
        .header("x-api-key", &partner.api_key)
}

async fn json_of(request: reqwest::RequestBuilder, status: u16) -> Value {
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), status);
    response.json().await.unwrap()
}

/// Applies the read models by hand (the API-only app runs no projector) until `calls` rows exist.
async fn project(app: &TestApp, calls: i64) {
    let projector = Projector::new(app.pool.clone(), Arc::new(ReadModels(app.privacy.clone())));
    catch_up_until(&projector, app, "select count(*) from call", calls).await;
}

fn ids(page: &Value) -> Vec<String> {
    page["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_partner_reads_its_call_with_analytics_but_never_another_partners() {
    let app = TestApp::spawn_processing().await;
    let other = create_partner(&app.pool, "partner-b", None, 600)
        .await
        .unwrap();
    let server = RecordingServer::start().await;
    app.post_batch(&batch(vec![item(
        "c1",
        &server.url("/files/left-only.wav"),
    )]))
    .await;
    app.final_row("c1").await;

    let call = json_of(get_as(&app, &app.partner, "/api/v1/partner/calls/c1"), 200).await;
    assert_eq!(call["id"], "c1");
    assert_eq!(call["status"], "completed");
    assert_eq!(call["recording_format"], "wav");
    assert_eq!(call["customer_talk_ms"], 0);
    assert!(call["processing_time_ms"].as_i64().unwrap() > 0);

    let history = json_of(
        get_as(&app, &app.partner, "/api/v1/partner/calls/c1/events"),
        200,
    )
    .await;
    let events = history["events"].as_array().unwrap();
    assert_eq!(events[0]["event_type"], "CallAccepted");
    assert_eq!(events[0]["sequence"], 1);
    assert_eq!(events[0]["payload"]["call"]["call"]["id"], "c1");
    assert!(
        events.iter().all(|e| e.get("metadata").is_none()),
        "partners do not see request metadata"
    );

    // Another partner's call looks exactly like one that does not exist.
    for path in [
        "/api/v1/partner/calls/c1",
        "/api/v1/partner/calls/c1/events",
        "/api/v1/partner/calls/nope",
    ] {
        let response = get_as(&app, &other, path).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
    let no_key = app
        .client
        .get(app.url("/api/v1/partner/calls/c1"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), 403);
}

#[tokio::test]
async fn listing_pages_through_calls_newest_first_and_new_calls_do_not_shift_pages() {
    let app = TestApp::spawn().await;
    let first: Vec<Value> = (0..7).map(|i| item_with_id(&format!("a{i}"))).collect();
    assert_eq!(app.post_batch(&batch(first)).await.status(), 200);
    project(&app, 7).await;

    let page1 = json_of(
        get_as(&app, &app.partner, "/api/v1/partner/calls?limit=3"),
        200,
    )
    .await;
    // A call accepted while paging lands in front, not in the pages still to come.
    let second = app.post_batch(&batch(vec![item_with_id("new")])).await;
    let second_batch = second.json::<Value>().await.unwrap()["batch_id"]
        .as_str()
        .unwrap()
        .to_owned();
    project(&app, 8).await;
    let cursor = page1["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let page2 = json_of(
        get_as(
            &app,
            &app.partner,
            &format!("/api/v1/partner/calls?limit=3&cursor={cursor}"),
        ),
        200,
    )
    .await;
    let cursor = page2["next_cursor"]
        .as_str()
        .expect("a third page")
        .to_owned();
    let page3 = json_of(
        get_as(
            &app,
            &app.partner,
            &format!("/api/v1/partner/calls?limit=3&cursor={cursor}"),
        ),
        200,
    )
    .await;

    let mut seen: Vec<String> = [ids(&page1), ids(&page2), ids(&page3)].concat();
    assert_eq!(seen.len(), 7, "{seen:?}");
    assert!(page3["next_cursor"].is_null());
    seen.sort();
    assert_eq!(seen, ["a0", "a1", "a2", "a3", "a4", "a5", "a6"]);

    let newest = json_of(
        get_as(&app, &app.partner, "/api/v1/partner/calls?limit=1"),
        200,
    )
    .await;
    assert_eq!(ids(&newest), ["new"]);
    let by_batch = json_of(
        get_as(
            &app,
            &app.partner,
            &format!("/api/v1/partner/calls?batch_id={second_batch}"),
        ),
        200,
    )
    .await;
    assert_eq!(ids(&by_batch), ["new"]);
    let failed = json_of(
        get_as(&app, &app.partner, "/api/v1/partner/calls?status=failed"),
        200,
    )
    .await;
    assert!(ids(&failed).is_empty());
    let other_tenant = json_of(
        get_as(
            &app,
            &app.partner,
            "/api/v1/partner/calls?tenant_id=elsewhere",
        ),
        200,
    )
    .await;
    assert!(ids(&other_tenant).is_empty());

    for bad in [
        "/api/v1/partner/calls?limit=501",
        "/api/v1/partner/calls?limit=0",
        "/api/v1/partner/calls?cursor=garbage",
    ] {
        let response = get_as(&app, &app.partner, bad).send().await.unwrap();
        assert_eq!(response.status(), 400, "{bad}");
    }
    let other = create_partner(&app.pool, "partner-b", None, 600)
        .await
        .unwrap();
    let theirs = json_of(get_as(&app, &other, "/api/v1/partner/calls"), 200).await;
    assert!(ids(&theirs).is_empty(), "partner B sees partner A's calls");
}

#[tokio::test]
async fn a_batch_reports_its_counts_and_calls() {
    let app = TestApp::spawn().await;
    let response = app
        .post_batch(&batch(vec![
            item_with_id("b1"),
            item_with_id("b2"),
            item_with_id("b1"),
        ]))
        .await;
    let batch_id = response.json::<Value>().await.unwrap()["batch_id"]
        .as_str()
        .unwrap()
        .to_owned();
    project(&app, 2).await;

    let view = json_of(
        get_as(
            &app,
            &app.partner,
            &format!("/api/v1/partner/batches/{batch_id}"),
        ),
        200,
    )
    .await;

    assert_eq!(view["call_count"], 3);
    assert_eq!(view["accepted_count"], 2);
    assert_eq!(view["duplicate_count"], 1);
    assert_eq!(
        view["calls"],
        json!([{"id": "b1", "status": "accepted"}, {"id": "b2", "status": "accepted"}])
    );
    let other = create_partner(&app.pool, "partner-b", None, 600)
        .await
        .unwrap();
    let response = get_as(&app, &other, &format!("/api/v1/partner/batches/{batch_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

fn admin(app: &TestApp, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    app.client
        .request(method, app.url(path))
        .bearer_auth(ADMIN_TOKEN)
}

#[tokio::test]
async fn support_sees_any_calls_history_with_request_metadata_and_can_search() {
    let app = TestApp::spawn().await;
    app.batch_request()
        .header("user-agent", "acme-dialer/7")
        .json(&batch(vec![item_with_id("s1")]))
        .send()
        .await
        .unwrap();
    project(&app, 1).await;

    let history = json_of(
        admin(
            &app,
            reqwest::Method::GET,
            "/api/v1/admin/partners/partner-a/calls/s1/events",
        ),
        200,
    )
    .await;
    let metadata = &history["events"][0]["metadata"];
    assert_eq!(metadata["user_agent"], "acme-dialer/7");
    assert_eq!(metadata["source_ip"], "127.0.0.1");
    assert!(!metadata["request_id"].as_str().unwrap().is_empty());

    let found = json_of(
        admin(
            &app,
            reqwest::Method::GET,
            "/api/v1/admin/calls?partner_id=partner-a&status=accepted",
        ),
        200,
    )
    .await;
    assert_eq!(ids(&found), ["s1"]);
    let none = json_of(
        admin(
            &app,
            reqwest::Method::GET,
            "/api/v1/admin/calls?partner_id=nobody",
        ),
        200,
    )
    .await;
    assert!(ids(&none).is_empty());
    let refused = app
        .client
        .get(app.url("/api/v1/admin/calls"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let as_partner = get_as(&app, &app.partner, "/api/v1/admin/calls")
        .send()
        .await
        .unwrap();
    assert_eq!(
        as_partner.status(),
        403,
        "a partner key is not an admin token"
    );
}

#[tokio::test]
async fn support_creates_partners_and_rotates_their_key_and_secret() {
    let app = TestApp::spawn().await;

    let response = admin(&app, reqwest::Method::POST, "/api/v1/admin/partners")
        .json(&json!({"id": "newco", "name": "New Co", "rate_limit_per_minute": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let old = PartnerCredentials {
        partner_id: "newco".into(),
        api_key: created["api_key"].as_str().unwrap().into(),
        signing_secret: created["signing_secret"].as_str().unwrap().into(),
    };
    assert_eq!(
        app.batch_request_as(&old)
            .json(&batch(vec![item_with_id("x")]))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let again = admin(&app, reqwest::Method::POST, "/api/v1/admin/partners")
        .json(&json!({"id": "newco"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);

    let rotated = json_of(
        admin(
            &app,
            reqwest::Method::POST,
            "/api/v1/admin/partners/newco/api-key/rotate",
        ),
        200,
    )
    .await;
    let new = PartnerCredentials {
        api_key: rotated["api_key"].as_str().unwrap().into(),
        ..old.clone()
    };
    assert_ne!(new.api_key, old.api_key);
    assert_eq!(rotated["signing_secret"], created["signing_secret"]);
    // The old key stops working at once.
    assert_eq!(
        app.batch_request_as(&old)
            .json(&batch(vec![item_with_id("y")]))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        app.batch_request_as(&new)
            .json(&batch(vec![item_with_id("y")]))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let secret = json_of(
        admin(
            &app,
            reqwest::Method::POST,
            "/api/v1/admin/partners/newco/signing-secret/rotate",
        ),
        200,
    )
    .await;
    assert_ne!(secret["signing_secret"], created["signing_secret"]);
    let missing = admin(
        &app,
        reqwest::Method::POST,
        "/api/v1/admin/partners/ghost/api-key/rotate",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(missing.status(), 404);

    let actions: Vec<(String, String)> = sqlx::query_as(
        "select action, actor from partner_audit where partner_id = 'newco' order by id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let actions: Vec<(&str, &str)> = actions
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("created", "support"),
            ("api_key_rotated", "support"),
            ("signing_secret_rotated", "support")
        ]
    );
}

#[tokio::test]
async fn the_cli_prints_a_call_history_and_rotates_keys() {
    let app = TestApp::spawn().await;
    app.post_batch(&batch(vec![item_with_id("h1"), item_with_id("h1")]))
        .await;
    let url: String = sqlx::query_scalar("select current_database()")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let database_url = app_database_url(&url);
    let callingest = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_callingest"))
            .env("CALLINGEST_MASTER_KEY", crate::helpers::TEST_MASTER_KEY)
            .args(args)
            .env("DATABASE_URL", &database_url)
            .output()
            .unwrap()
    };

    let table = callingest(&["call", "history", "--partner", "partner-a", "--call", "h1"]);
    assert!(
        table.status.success(),
        "{}",
        String::from_utf8_lossy(&table.stderr)
    );
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.lines().next().unwrap().contains("event"));
    assert!(
        text.contains("CallAccepted") && text.contains("DuplicateSubmissionReceived"),
        "{text}"
    );

    let json_out = callingest(&[
        "call",
        "history",
        "--partner",
        "partner-a",
        "--call",
        "h1",
        "--json",
    ]);
    let events: Value = serde_json::from_slice(&json_out.stdout).expect("a JSON array");
    assert_eq!(events[1]["event_type"], "DuplicateSubmissionReceived");
    assert_eq!(events[1]["sequence"], 2);
    assert!(events[1]["recorded_at"].is_string());
    assert_eq!(events[1]["payload"]["payload_differs"], false);

    let unknown = callingest(&[
        "call",
        "history",
        "--partner",
        "partner-a",
        "--call",
        "nope",
    ]);
    assert!(!unknown.status.success());

    let rotated = callingest(&["partner", "rotate-key", "--id", "partner-a"]);
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    let printed: Value = serde_json::from_slice(&rotated.stdout).unwrap();
    assert_eq!(printed["partner_id"], "partner-a");
    assert_eq!(
        printed["signing_secret"],
        app.partner.signing_secret.as_str()
    );
    assert_eq!(
        app.post_batch(&batch(vec![item_with_id("z")]))
            .await
            .status(),
        403,
        "the old key still works"
    );
}

/// The URL of the test's own database (the server of DATABASE_URL, this database).
fn app_database_url(name: &str) -> String {
    use sqlx::ConnectOptions;
    let server: sqlx::postgres::PgConnectOptions = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
        .parse()
        .unwrap();
    server.database(name).to_url_lossy().to_string()
}

const QUERIES: [(&str, &str); 6] = [
    (
        "1_failure_rate_per_tenant_per_day.sql",
        include_str!("../../projections/queries/1_failure_rate_per_tenant_per_day.sql"),
    ),
    (
        "2_mean_talk_ratio_per_agent.sql",
        include_str!("../../projections/queries/2_mean_talk_ratio_per_agent.sql"),
    ),
    (
        "3_processing_time_percentiles.sql",
        include_str!("../../projections/queries/3_processing_time_percentiles.sql"),
    ),
    (
        "4_unfinished_batches.sql",
        include_str!("../../projections/queries/4_unfinished_batches.sql"),
    ),
    (
        "5_silence_and_overlap_per_tenant.sql",
        include_str!("../../projections/queries/5_silence_and_overlap_per_tenant.sql"),
    ),
    (
        "6_agent_coaching_per_week.sql",
        include_str!("../../projections/queries/6_agent_coaching_per_week.sql"),
    ),
];

#[tokio::test]
async fn the_documented_analyst_queries_run_as_the_analyst_role_and_answer_right() {
    let app = TestApp::spawn_processing().await;
    let server = RecordingServer::start().await;
    let calls = vec![
        item("left", &server.url("/files/left-only.wav")),
        item("both", &server.url("/files/overlap.wav")),
        item("gone", &server.url("/files/missing.wav")),
    ];
    app.post_batch(&batch(calls)).await;
    app.drain().await;
    assert!(
        as_analyst(&app, QUERIES[3].1).await.unwrap().is_empty(),
        "batch counts never settled"
    );
    let readme = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/projections/README.md"
    ))
    .unwrap();
    for (name, sql) in QUERIES {
        assert!(
            readme.contains(sql.trim()),
            "projections/README.md does not show {name} as it is"
        );
    }

    let failure = as_analyst(&app, QUERIES[0].1).await.unwrap();
    assert_eq!(failure.len(), 1);
    assert_eq!(failure[0]["day"], "2023-01-01");
    assert_eq!(
        (
            failure[0]["completed"].clone(),
            failure[0]["failed"].clone()
        ),
        (json!(2), json!(1))
    );
    assert_eq!(failure[0]["failure_rate"], 0.333);

    let talk = as_analyst(&app, QUERIES[1].1).await.unwrap();
    // Left-only: the agent does all the talking (1.0); overlap: half (0.5).
    assert_eq!(talk[0]["agent_id"], "agent123");
    assert_eq!(talk[0]["mean_agent_talk_ratio"], 0.75);

    let times = as_analyst(&app, QUERIES[2].1).await.unwrap();
    assert_eq!(times[0]["completed_calls"], 2);
    assert!(times[0]["p50_processing_ms"].as_f64().unwrap() > 0.0);

    let shape = as_analyst(&app, QUERIES[4].1).await.unwrap();
    assert_eq!(shape[0]["calls"], 2);
    assert_eq!(shape[0]["mean_overlap_ms"], 500);
    assert_eq!(shape[0]["recorded_minutes"], 0.17);

    // The role reads the read models and nothing else.
    for forbidden in [
        "select * from events",
        "select * from partner",
        "select * from processing_job",
    ] {
        let err = as_analyst(&app, forbidden).await.unwrap_err();
        assert!(
            err.to_string().contains("permission denied"),
            "{forbidden}: {err}"
        );
    }
}
