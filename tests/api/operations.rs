use serde_json::Value;
use sqlx::ConnectOptions;

use crate::helpers::{batch, item_with_id, TestApp};

fn committed_spec() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
        .expect("openapi/openapi.json is committed")
}

#[tokio::test]
async fn the_committed_openapi_document_is_what_the_code_emits() {
    assert_eq!(
        committed_spec().trim_end(),
        callingest::http::openapi_json(),
        "openapi/openapi.json is stale: run `cargo run -- openapi --output openapi/openapi.json`"
    );
}

#[tokio::test]
async fn the_served_openapi_document_is_the_committed_one() {
    let app = TestApp::spawn().await;
    let served = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(served, committed_spec().trim_end());
    assert!(
        !served.contains("127.0.0.1"),
        "the spec must not name the bound address"
    );
}

#[test]
fn every_operation_has_an_id_and_every_error_shares_one_schema() {
    let spec: Value = serde_json::from_str(&committed_spec()).unwrap();
    let mut operations = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            operations += 1;
            assert!(
                operation["operationId"].is_string(),
                "{method} {path} has no operationId"
            );
            for (status, response) in operation["responses"].as_object().unwrap() {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        response["content"]["application/json; charset=utf-8"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
    assert!(operations >= 3);
}

#[tokio::test]
async fn health_readiness_and_docs_are_served() {
    let app = TestApp::spawn().await;
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready: Value = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready");
    let docs = app.client.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs
        .text()
        .await
        .unwrap()
        .to_lowercase()
        .contains("swagger"));
}

#[tokio::test]
async fn readiness_fails_when_the_database_is_gone() {
    let app = TestApp::spawn().await;
    app.pool.close().await;
    let response = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["success"], false);
}

#[tokio::test]
async fn metrics_count_requests_and_accepted_calls() {
    let app = TestApp::spawn().await;
    let response = app
        .post_batch(&batch(vec![item_with_id("m1"), item_with_id("m1")]))
        .await;
    assert_eq!(response.status(), 200);

    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    for name in [
        "callingest_http_requests_total{status=\"200\"}",
        "callingest_calls_accepted_total",
        "callingest_calls_duplicate_total",
        "callingest_http_request_duration_seconds_bucket",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
}

/// `projections rebuild` says how far it is on stderr (events done of those in the log, rate,
/// time left) and keeps stdout to its one JSON summary per projection.
#[tokio::test]
async fn rebuilding_a_projection_reports_progress_on_stderr() {
    let app = TestApp::spawn().await;
    let items = (0..3)
        .map(|n| item_with_id(&format!("rebuild-{n}")))
        .collect();
    assert_eq!(app.post_batch(&batch(items)).await.status(), 200);
    let total = app.event_count().await;
    assert!(total >= 3);

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_callingest"))
        .env("CALLINGEST_MASTER_KEY", crate::helpers::TEST_MASTER_KEY)
        .args(["projections", "rebuild", "read_models"])
        .env(
            "DATABASE_URL",
            app.pool.connect_options().to_url_lossy().to_string(),
        )
        .output()
        .await
        .expect("callingest runs");

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let progress = stderr
        .lines()
        .rev()
        .find(|line| line.starts_with("read_models: "))
        .unwrap_or_else(|| panic!("no progress line in {stderr:?}"));
    let (done, rest) = progress["read_models: ".len()..]
        .split_once('/')
        .expect("done/total");
    assert!(done.parse::<i64>().unwrap() <= total, "{progress}");
    assert!(rest.starts_with(&format!("{total} events (")), "{progress}");
    assert!(progress.contains(" events/s, about "), "{progress}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let summary: Value = serde_json::from_str(stdout.trim()).expect("one JSON line on stdout");
    assert_eq!(summary["projection"], "read_models");
}
