//! Start-up does not depend on start order: instances of the real binary started before their
//! PostgreSQL is reachable listen at once, are alive and not ready while they retry, and become
//! ready on their own once it appears. The database "appears" when the test starts forwarding
//! the port the instances were given to the real server (a small TCP forwarder on 127.0.0.1).

use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::postgres::PgConnectOptions;
use sqlx::ConnectOptions;
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::instances::{free_port, Instance};
use crate::helpers::{TestDatabase, BATCH_PATH};

/// The PostgreSQL server the tests use (host and port), from `DATABASE_URL`.
fn server() -> PgConnectOptions {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
        .parse()
        .unwrap()
}

/// Forwards every connection to 127.0.0.1:`port` to the real server, until dropped.
struct Forwarder(tokio::task::JoinHandle<()>);

impl Forwarder {
    async fn start(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let target = server();
        let target = format!("{}:{}", target.get_host(), target.get_port());
        Self(tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let target = target.clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }))
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn status_and_body(client: &reqwest::Client, url: String) -> (u16, String) {
    let response = client.get(url).send().await.expect("the instance answers");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// The value of an unlabelled metric in a Prometheus text page.
fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test]
async fn instances_started_before_the_database_are_alive_then_ready_once_it_appears() {
    let database = TestDatabase::create().await;
    let port = free_port();
    let url = server()
        .port(port)
        .database(&database.name)
        .to_url_lossy()
        .to_string();
    let api = Instance::start(&url, "api", &[]);
    let worker = Instance::start(&url, "worker", &[]);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // Nothing listens on the database port: both instances are up and answer at once.
    for instance in [&api, &worker] {
        instance
            .wait_for(&client, "/healthz", 200, Duration::from_secs(30))
            .await;
    }
    let waiting_since = Instant::now();
    while waiting_since.elapsed() < Duration::from_secs(2) {
        for instance in [&api, &worker] {
            let (status, body) = status_and_body(&client, instance.url("/readyz")).await;
            assert_eq!(status, 503, "{body}");
            let body: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(body["success"], false);
            assert!(
                body["message"].as_str().unwrap().contains("database"),
                "{body}"
            );
            let (status, _) = status_and_body(&client, instance.url("/healthz")).await;
            assert_eq!(status, 200);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The API's own paths say it is starting rather than failing.
    let response = client.post(api.url(BATCH_PATH)).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let (status, page) = status_and_body(&client, worker.url("/metrics")).await;
    assert_eq!(status, 200);
    assert_eq!(
        metric(&page, "callingest_database_ready"),
        Some(0.0),
        "{page}"
    );

    // The database appears: both become ready without a restart.
    let _forwarder = Forwarder::start(port).await;
    api.wait_ready(&client).await;
    worker.wait_ready(&client).await;

    let (status, page) = status_and_body(&client, worker.url("/metrics")).await;
    assert_eq!(status, 200);
    assert_eq!(
        metric(&page, "callingest_database_ready"),
        Some(1.0),
        "{page}"
    );
    let rss = metric(&page, "process_resident_memory_bytes").expect("RSS reported");
    assert!(rss > 1_000_000.0, "RSS {rss}");
    let fds = metric(&page, "process_open_fds").expect("open descriptors reported");
    assert!(fds >= 3.0, "open fds {fds}");
    let cpu = metric(&page, "process_cpu_seconds_total").expect("CPU time reported");
    assert!(cpu > 0.0, "CPU seconds {cpu}");
    let heartbeat = metric(&page, "callingest_background_heartbeat_age_seconds")
        .expect("the worker's heartbeat reported");
    assert!(heartbeat < 30.0, "heartbeat age {heartbeat}");
    // A worker serves the operations routes only.
    let response = client.post(worker.url(BATCH_PATH)).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let (status, _) = status_and_body(&client, api.url("/metrics")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn an_instance_gives_up_at_its_connect_deadline_with_a_clear_error() {
    let port = free_port();
    let url = server()
        .port(port)
        .database("never_reached")
        .to_url_lossy()
        .to_string();
    let started = Instant::now();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_callingest"))
        .env("CALLINGEST_MASTER_KEY", crate::helpers::TEST_MASTER_KEY)
        .arg("serve")
        .env("DATABASE_URL", &url)
        .env("CALLINGEST_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("CALLINGEST_DB_CONNECT_DEADLINE_MS", "1500")
        .env("CALLINGEST_LOG", "warn")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .expect("the instance exits")
        .unwrap();

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("CALLINGEST_DB_CONNECT_DEADLINE_MS"),
        "{stderr}"
    );
    assert!(stderr.contains("retrying"), "it retried first: {stderr}");
    assert!(started.elapsed() >= Duration::from_millis(1500));
}

/// `callingest serve` with `env` on top of the test environment, run to its exit.
async fn serve_exits_with(env: &[(&str, &str)]) -> std::process::Output {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_callingest"))
        .arg("serve")
        .env("CALLINGEST_LISTEN", format!("127.0.0.1:{}", free_port()))
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .expect("the instance exits at once")
        .unwrap();
    assert!(!output.status.success());
    output
}

#[tokio::test]
async fn settings_that_cannot_work_together_stop_the_start_up_naming_the_variable() {
    let output = serve_exits_with(&[
        ("CALLINGEST_FETCH_TIMEOUT_MS", "60000"),
        ("CALLINGEST_FETCH_STEP_MAX_MS", "30000"),
        // Info: an instance that bound its address would say "callingest listening".
        ("CALLINGEST_LOG", "info"),
    ])
    .await;

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "CALLINGEST_FETCH_STEP_MAX_MS (30000 ms) must exceed CALLINGEST_FETCH_TIMEOUT_MS \
             (60000 ms)"
        ),
        "{stderr}"
    );
    // Refused before it bound its address or touched the database.
    assert!(!stderr.contains("listening"), "{stderr}");
}

#[tokio::test]
async fn a_millisecond_variable_that_is_not_a_number_is_refused_by_name() {
    let output = serve_exits_with(&[("CALLINGEST_LEASE_MS", "30s")]).await;

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--lease-ms"), "{stderr}");
    assert!(
        stderr.contains("\"30s\" is not a whole number of milliseconds"),
        "{stderr}"
    );
}
