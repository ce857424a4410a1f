use std::process::Command;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::helpers::{batch, published_item, TestApp, TestDatabase};

#[tokio::test]
async fn partner_create_prints_only_the_credentials_as_json_and_stores_only_a_hash() {
    let database = TestDatabase::create().await;

    let output = Command::new(env!("CARGO_BIN_EXE_callingest"))
        .env("CALLINGEST_MASTER_KEY", crate::helpers::TEST_MASTER_KEY)
        .args([
            "partner",
            "create",
            "--id",
            "acme",
            "--name",
            "Acme Corp",
            "--rate-limit-per-minute",
            "120",
        ])
        .env("DATABASE_URL", &database.url)
        .output()
        .expect("callingest runs");

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Value = serde_json::from_slice(&output.stdout).expect("stdout is one JSON object");
    assert_eq!(printed["partner_id"], "acme");
    let api_key = printed["api_key"].as_str().unwrap();
    let secret = printed["signing_secret"].as_str().unwrap();
    assert!(api_key.len() >= 40);
    let key_bytes = base64_decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"));
    assert_eq!(key_bytes.len(), 32);

    let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
    let (name, hash, limit): (String, Vec<u8>, i32) = sqlx::query_as(
        "select name, api_key_sha256, rate_limit_per_minute from partner where partner_id = 'acme'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(name, "Acme Corp");
    assert_eq!(limit, 120);
    assert_eq!(hash, Sha256::digest(api_key.as_bytes()).to_vec());
    let row_text: String = sqlx::query_scalar("select row_to_json(p)::text from partner p")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        !row_text.contains(api_key),
        "the API key is stored in clear"
    );
    pool.close().await;
}

#[tokio::test]
async fn partner_create_refuses_a_bad_or_taken_id() {
    let database = TestDatabase::create().await;
    let run = |id: &str| {
        Command::new(env!("CARGO_BIN_EXE_callingest"))
            .env("CALLINGEST_MASTER_KEY", crate::helpers::TEST_MASTER_KEY)
            .args(["partner", "create", "--id", id])
            .env("DATABASE_URL", &database.url)
            .output()
            .unwrap()
    };
    assert!(run("ok-partner").status.success());
    let taken = run("ok-partner");
    assert!(!taken.status.success());
    assert!(String::from_utf8_lossy(&taken.stderr).contains("already exists"));
    assert!(taken.stdout.is_empty());
    let bad = run("has:colon");
    assert!(!bad.status.success());
}

#[tokio::test]
async fn a_new_partner_can_submit_with_the_printed_key() {
    let app = TestApp::spawn().await;
    let credentials = callingest::partners::create_partner(&app.pool, "fresh", None, 600)
        .await
        .unwrap();
    let response = app
        .batch_request_as(&credentials)
        .json(&batch(vec![published_item()]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("valid base64")
}
