//! Crash under load: the real `callingest` binary is killed with SIGKILL five times while
//! partners submit calls (≥ 500 calls/s), recordings are fetched from a loopback server and
//! outcomes delivered to a loopback HTTPS receiver. Afterwards every call that was answered 200
//! exists, was processed exactly once, and its outcome was delivered under one webhook-id.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callingest::callbacks::webhook_id;
use callingest::partners::create_partner;
use serde_json::json;

use crate::helpers::callback_receiver::{Receiver, Reply, TestCa};
use crate::helpers::drain::drain_database;
use crate::helpers::recording_server::RecordingServer;
use crate::helpers::{
    assert_each_call_logged_processed_and_called_back_once, batch, item_with_id, run_alone,
    test_privacy, wait_until, TestDatabase, BATCH_PATH,
};

struct Service {
    env: Vec<(String, String)>,
    child: Option<Child>,
    address: String,
}

impl Service {
    fn start(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_callingest"))
            .env("CALLINGEST_MASTER_KEY", crate::helpers::TEST_MASTER_KEY)
            .arg("serve")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("callingest starts");
        self.child = Some(child);
    }

    /// SIGKILL: no shutdown code runs, as in a crash.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn wait_ready(&self, client: &reqwest::Client) {
        let readyz = format!("{}/readyz", self.address);
        let readyz = &readyz;
        wait_until(
            "callingest to become ready",
            Duration::from_secs(30),
            || async move {
                client
                    .get(readyz)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            },
        )
        .await;
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test]
#[ignore = "measures throughput, so .ci/run runs it alone: scripts/test --test api -- --ignored"]
async fn killing_the_service_under_load_loses_and_doubles_nothing() {
    let _alone = run_alone().await;
    let database = TestDatabase::create().await;
    let ca = TestCa::new();
    let receiver = Receiver::start(&ca, vec![Reply::Status(200)]).await;
    let recordings = RecordingServer::start().await;
    let recording_url = recordings.url("/files/silence.wav");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = [
        ("DATABASE_URL", database.url.clone()),
        ("CALLINGEST_LISTEN", format!("127.0.0.1:{port}")),
        ("CALLINGEST_ALLOW_PRIVATE_URLS", "true".into()),
        (
            "CALLINGEST_EXTRA_CA_FILE",
            ca.ca_file().to_str().unwrap().into(),
        ),
        ("CALLINGEST_FETCH_BACKOFF_BASE_MS", "100".into()),
        ("CALLINGEST_CALLBACK_BACKOFF_BASE_MS", "200".into()),
        ("CALLINGEST_CALLBACK_TIMEOUT_MS", "3000".into()),
        ("CALLINGEST_LOG", "warn".into()),
    ];
    let mut service = Service {
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        child: None,
        address: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    service.start();
    service.wait_ready(&client).await;
    let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
    let partner = create_partner(&pool, "partner-a", None, 1_000_000)
        .await
        .unwrap();

    // 8 clients, batches of 10, as fast as the service answers.
    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let mut clients = Vec::new();
    for c in 0..8 {
        let (client, accepted, sent, running) = (
            client.clone(),
            accepted.clone(),
            sent.clone(),
            running.clone(),
        );
        let (url, key, recording_url, callback_url) = (
            format!("{}{BATCH_PATH}", service.address),
            partner.api_key.clone(),
            recording_url.clone(),
            receiver.url(),
        );
        clients.push(tokio::spawn(async move {
            let mut n = 0;
            while running.load(Ordering::SeqCst) {
                let ids: Vec<String> = (0..10).map(|i| format!("c{c}-{n}-{i}")).collect();
                let items = ids
                    .iter()
                    .map(|id| {
                        let mut item = item_with_id(id);
                        item["call"]["recording_url"] = json!(recording_url);
                        item["callback_url"] = json!(callback_url);
                        item
                    })
                    .collect();
                n += 1;
                sent.fetch_add(ids.len(), Ordering::SeqCst);
                let response = client
                    .post(&url)
                    .header("x-partner-id", "partner-a")
                    .header("x-api-key", &key)
                    .header("x-tenant-id", "t")
                    .header("x-sub-tenant-id", "s")
                    .json(&batch(items))
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status() == 200 => accepted.lock().unwrap().extend(ids),
                    // Killed mid-request, or down: not answered 200, so promised nothing.
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }));
    }

    let load_started = Instant::now();
    // Five kills at uneven moments, each followed by an immediate restart.
    for pause_ms in [700u64, 1_100, 450, 900, 1_300] {
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        service.kill();
        service.start();
        service.wait_ready(&client).await;
    }
    // The load goes on for a moment after the last restart.
    tokio::time::sleep(Duration::from_millis(800)).await;
    running.store(false, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    let load_seconds = load_started.elapsed().as_secs_f64();
    let accepted: Vec<String> = accepted.lock().unwrap().clone();
    let rate = accepted.len() as f64 / load_seconds;
    eprintln!("{rate:.0} calls/s accepted under load");
    assert!(rate >= 500.0, "only {rate:.0} calls/s accepted under load");

    let ids: Vec<String> = accepted.iter().map(|c| format!("partner-a:{c}")).collect();
    // Let the (last) service finish processing and delivering.
    drain_database(&pool, &test_privacy(), Duration::from_secs(240)).await;
    let delivered: i64 = sqlx::query_scalar(
        "select count(distinct aggregate_id) from events
         where event_type = 'CallbackDelivered' and aggregate_id = any($1)",
    )
    .bind(&ids)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        delivered as usize,
        accepted.len(),
        "callbacks delivered of the calls accepted"
    );

    assert_each_call_logged_processed_and_called_back_once(&pool, "partner-a", &accepted).await;
    // Every delivery of a call carried that call's one webhook-id.
    let expected: HashSet<String> = accepted
        .iter()
        .map(|c| webhook_id(&format!("partner-a:{c}")))
        .collect();
    let requests = receiver.requests();
    let seen: HashSet<String> = requests
        .iter()
        .filter_map(|r| r.header("webhook-id").map(str::to_owned))
        .collect();
    assert!(
        expected.is_subset(&seen),
        "some accepted calls were never delivered"
    );
    println!(
        "crash test: {} calls accepted at {rate:.0}/s over {load_seconds:.1} s, 5 kills, {} deliveries for {} calls",
        accepted.len(),
        requests.len(),
        expected.len()
    );
    pool.close().await;
}
