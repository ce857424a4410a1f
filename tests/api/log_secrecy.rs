//! Nothing secret reaches the logs: API keys (right or wrong), signing secrets, the admin
//! token, and the query strings of partner URLs (presigned tokens) — checked on the real
//! binary's stderr at debug level while it ingests, fails a fetch and delivers a callback.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::callback_receiver::{Receiver, Reply, TestCa};
use crate::helpers::drain::{drain_database, DRAIN_TIMEOUT};
use crate::helpers::recording_server::RecordingServer;
use crate::helpers::{batch, item_with_id, test_privacy, wait_until, TestDatabase, BATCH_PATH};

#[tokio::test]
async fn keys_secrets_tokens_and_url_query_strings_never_reach_the_logs() {
    let database = TestDatabase::create().await;
    let ca = TestCa::new();
    let receiver = Receiver::start(&ca, vec![Reply::Status(200)]).await;
    let recordings = RecordingServer::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log_file = tempfile::NamedTempFile::new().unwrap();
    let admin_token = "admin-TOKEN-9f3c";
    let mut service = Command::new(env!("CARGO_BIN_EXE_callingest"))
        .env("CALLINGEST_MASTER_KEY", crate::helpers::TEST_MASTER_KEY)
        .arg("serve")
        .env("DATABASE_URL", &database.url)
        .env("CALLINGEST_LISTEN", format!("127.0.0.1:{port}"))
        .env("CALLINGEST_ALLOW_PRIVATE_URLS", "true")
        .env("CALLINGEST_EXTRA_CA_FILE", ca.ca_file())
        .env("CALLINGEST_ADMIN_TOKEN", admin_token)
        .env("CALLINGEST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(log_file.reopen().unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let (client_ref, base_ref) = (&client, &base);
    wait_until(
        "callingest to be ready",
        Duration::from_secs(30),
        || async move {
            client_ref
                .get(format!("{base_ref}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;
    let created = Command::new(env!("CARGO_BIN_EXE_callingest"))
        .env("CALLINGEST_MASTER_KEY", crate::helpers::TEST_MASTER_KEY)
        .args(["partner", "create", "--id", "partner-a"])
        .env("DATABASE_URL", &database.url)
        .env("CALLINGEST_LOG", "debug")
        .output()
        .unwrap();
    let credentials: Value = serde_json::from_slice(&created.stdout).unwrap();
    let api_key = credentials["api_key"].as_str().unwrap().to_owned();
    let signing_secret = credentials["signing_secret"].as_str().unwrap().to_owned();

    let mut call = item_with_id("secret-call");
    call["call"]["recording_url"] =
        json!(recordings.url("/files/missing.wav?X-Amz-Signature=PRESIGNED-abc123"));
    call["callback_url"] = json!(format!("{}?token=CALLBACK-xyz789", receiver.url()));
    let post = |key: &str| {
        client
            .post(format!("{base}{BATCH_PATH}"))
            .header("x-partner-id", "partner-a")
            .header("x-api-key", key)
            .header("x-tenant-id", "t")
            .header("x-sub-tenant-id", "s")
            .json(&batch(vec![call.clone()]))
    };
    assert_eq!(
        post("cik_WRONG-key-5555").send().await.unwrap().status(),
        403
    );
    assert_eq!(post(&api_key).send().await.unwrap().status(), 200);
    let admin = client
        .get(format!("{base}/api/v1/admin/calls"))
        .bearer_auth(admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 200);
    // The fetch fails (404) and the failure is delivered to the receiver.
    receiver.wait_for_requests(1, Duration::from_secs(30)).await;
    // Everything after it logged too: the delivery recorded, nothing left to do.
    let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
    drain_database(&pool, &test_privacy(), DRAIN_TIMEOUT).await;
    pool.close().await;
    let _ = service.kill();
    let _ = service.wait();

    let mut logs = std::fs::read_to_string(log_file.path()).unwrap();
    logs.push_str(&String::from_utf8_lossy(&created.stderr));
    assert!(
        logs.contains("request finished"),
        "the service logged nothing: {logs}"
    );
    for secret in [
        api_key.as_str(),
        signing_secret.as_str(),
        signing_secret.trim_start_matches("whsec_"),
        "cik_WRONG-key-5555",
        admin_token,
        "PRESIGNED-abc123",
        "CALLBACK-xyz789",
        database.url.as_str(),
    ] {
        assert!(!logs.contains(secret), "{secret:?} appears in the logs");
    }
}
