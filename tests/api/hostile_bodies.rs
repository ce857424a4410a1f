//! Bodies built to hurt: validation bombs are answered quickly, with bounded memory, while
//! `/healthz` stays fast; oversized bodies to the admin and support routes are refused before
//! they are read, whoever sends them. Run against the real binary, whose memory can be read
//! from `/proc` apart from the test's own.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::instances::Instance;
use crate::helpers::{batch, item_with_id, json_body, TestDatabase, BATCH_PATH};

/// Generous for an unoptimised build on a busy machine; the benchmark measures the real
/// figures (benches/validation.rs).
const ANSWER_BOUND: Duration = Duration::from_secs(5);
const HEALTHZ_BOUND: Duration = Duration::from_secs(1);
/// Peak memory a single hostile request may add to the service (unoptimised build).
const PEAK_GROWTH_BOUND_KIB: u64 = 128 * 1024;

/// `callingest serve --role api` on a fresh database, with one partner.
struct Service {
    instance: Instance,
    base: String,
    api_key: String,
    _database: TestDatabase,
}

impl Service {
    async fn start() -> Self {
        let database = TestDatabase::create().await;
        let instance = Instance::start(
            &database.url,
            "api",
            &[("CALLINGEST_ADMIN_TOKEN", "hostile-admin-token")],
        );
        instance
            .wait_for(
                &reqwest::Client::new(),
                "/readyz",
                200,
                Duration::from_secs(30),
            )
            .await;
        let created = Command::new(env!("CARGO_BIN_EXE_callingest"))
            .env("CALLINGEST_MASTER_KEY", crate::helpers::TEST_MASTER_KEY)
            .args(["partner", "create", "--id", "partner-a"])
            .env("DATABASE_URL", &database.url)
            .output()
            .unwrap();
        let credentials: Value = serde_json::from_slice(&created.stdout).unwrap();
        Self {
            base: instance.address.clone(),
            instance,
            api_key: credentials["api_key"].as_str().unwrap().to_owned(),
            _database: database,
        }
    }

    fn address(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
    }

    /// A `/proc/<pid>/status` figure of the service, in KiB.
    fn memory_kib(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.instance.pid())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    /// Starts a new peak-memory measurement (writing 5 to `clear_refs` resets `VmHWM`).
    fn reset_peak(&self) -> u64 {
        std::fs::write(format!("/proc/{}/clear_refs", self.instance.pid()), "5").unwrap();
        self.memory_kib("VmRSS")
    }

    async fn post_batch(&self, client: &reqwest::Client, body: Vec<u8>) -> reqwest::Response {
        client
            .post(format!("{}{BATCH_PATH}", self.base))
            .header("x-partner-id", "partner-a")
            .header("x-api-key", &self.api_key)
            .header("x-tenant-id", "t")
            .header("x-sub-tenant-id", "s")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }
}

const FIVE_MIB: usize = 5 * 1024 * 1024;

/// `{"data":[` + `repeat` as many times as fits in 5 MiB with `last` + `]}`.
fn data_of(repeat: &str, last: &str) -> Vec<u8> {
    let room = FIVE_MIB - "{\"data\":[]}".len() - last.len();
    let mut body = String::with_capacity(FIVE_MIB);
    body.push_str("{\"data\":[");
    body.push_str(&repeat.repeat(room / repeat.len()));
    body.push_str(last);
    body.push_str("]}");
    body.into_bytes()
}

/// The bombs of issue 12 and their kin, each at most 5 MiB, with the status each must get.
fn bombs() -> Vec<(&'static str, Vec<u8>, u16)> {
    let key = "k".repeat(2 * 1024 * 1024);
    let long_key = format!("{{\"data\":[{{\"{key}\":[{}0]}}]}}", "0,".repeat(1_400_000));
    let deep = {
        let levels = (FIVE_MIB - 20) / 2;
        format!(
            "{{\"data\":[{}{}]}}",
            "[".repeat(levels),
            "]".repeat(levels)
        )
    };
    let wide = {
        let members: Vec<String> = (0..370_000).map(|i| format!("\"k{i:07}\":0")).collect();
        format!("{{\"data\":[{{{}}}]}}", members.join(","))
    };
    let mut item = item_with_id("many-metadata");
    item.as_object_mut().unwrap().remove("metadata");
    let item = item.to_string();
    let metadata = {
        let pairs: Vec<String> = (0..330_000).map(|i| format!("\"m{i:07}\":1")).collect();
        format!(
            "{{\"data\":[{},\"metadata\":{{{}}}}}]}}",
            &item[..item.len() - 1],
            pairs.join(",")
        )
    };
    let mut valid = item_with_id("huge-unknown-field");
    valid["padding"] = json!("");
    let base = batch(vec![valid.clone()]).to_string().len();
    valid["padding"] = json!("p".repeat(FIVE_MIB - base));
    vec![
        ("empty items", data_of("{},", "{}"), 422),
        ("one long key over many zeros", long_key.into_bytes(), 422),
        ("deep arrays", deep.into_bytes(), 400),
        ("a wide object", wide.into_bytes(), 422),
        ("many metadata keys", metadata.into_bytes(), 422),
        (
            "NUL characters everywhere",
            data_of("\"\\u0000\",", "1"),
            422,
        ),
        ("items of wrong types", data_of("[],", "[]"), 422),
        (
            "one valid item carrying a huge unknown field",
            batch(vec![valid]).to_string().into_bytes(),
            200,
        ),
    ]
}

/// Polls `/healthz` until told to stop; the slowest answer seen, in microseconds.
fn watch_healthz(base: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        let slowest = AtomicU64::new(0);
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let response = client.get(format!("{base}/healthz")).send().await.unwrap();
            assert_eq!(response.status(), 200);
            slowest.fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        slowest.into_inner()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_bombs_are_answered_quickly_in_bounded_memory_while_healthz_stays_fast() {
    let service = Service::start().await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    // Warm up: the first request pays for connections and lazy set-up.
    let response = service
        .post_batch(
            &client,
            batch(vec![item_with_id("warm-up")])
                .to_string()
                .into_bytes(),
        )
        .await;
    assert_eq!(response.status(), 200);

    for (name, body, status) in bombs() {
        assert!(body.len() <= FIVE_MIB, "{name}: {} bytes", body.len());
        let stop = Arc::new(AtomicBool::new(false));
        let healthz = watch_healthz(service.base.clone(), stop.clone());
        tokio::time::sleep(Duration::from_millis(30)).await;
        let baseline = service.reset_peak();

        let started = Instant::now();
        let response = service.post_batch(&client, body).await;
        let elapsed = started.elapsed();
        let answered = response.status().as_u16();
        let answer = json_body(response).await;

        stop.store(true, Ordering::Relaxed);
        let slowest_healthz = Duration::from_micros(healthz.await.unwrap());
        let growth = service.memory_kib("VmHWM").saturating_sub(baseline);
        eprintln!(
            "{name}: {answered} in {elapsed:?}, peak growth {growth} KiB, slowest /healthz \
             {slowest_healthz:?}"
        );
        assert_eq!(answered, status, "{name}: {answer}");
        assert!(elapsed < ANSWER_BOUND, "{name} took {elapsed:?}");
        assert!(
            slowest_healthz < HEALTHZ_BOUND,
            "{name}: /healthz took {slowest_healthz:?}"
        );
        assert!(
            growth < PEAK_GROWTH_BOUND_KIB,
            "{name}: peak memory grew by {growth} KiB"
        );
        if answered == 422 {
            let errors = answer["errors"].as_array().unwrap();
            assert!(
                !errors.is_empty() && errors.len() <= 100,
                "{name}: {answer}"
            );
        }
    }
}

#[tokio::test]
async fn more_than_a_hundred_broken_rules_are_cut_short_and_say_so() {
    let service = Service::start().await;
    let client = reqwest::Client::new();
    // 50 empty items break three rules each.
    let response = service
        .post_batch(
            &client,
            json!({"data": vec![json!({}); 50]})
                .to_string()
                .into_bytes(),
        )
        .await;
    assert_eq!(response.status(), 422);
    let answer = json_body(response).await;
    assert_eq!(answer["errors"].as_array().unwrap().len(), 100);
    assert_eq!(answer["errors_truncated"], true);
    assert_eq!(answer["message"], "Validation failed");
    assert_eq!(
        answer["errors"][0],
        json!({"field": "data[0].call", "message": "call is required"})
    );

    let response = service
        .post_batch(
            &client,
            json!({"data": vec![json!({}); 2]}).to_string().into_bytes(),
        )
        .await;
    let answer = json_body(response).await;
    assert_eq!(answer["errors"].as_array().unwrap().len(), 6);
    assert!(answer.get("errors_truncated").is_none(), "{answer}");
}

/// What a raw client saw when it sent `total` bytes of body to `path`, declared with
/// `Content-Length` or chunked, writing as fast as the service takes them.
struct Refusal {
    status: u16,
    body: Value,
    /// Body bytes written when the answer had arrived.
    sent: usize,
}

async fn send_huge(
    address: &str,
    path: &str,
    headers: &str,
    total: usize,
    chunked: bool,
) -> Refusal {
    let stream = TcpStream::connect(address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let sent = Arc::new(AtomicUsize::new(0));
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_owned()
    } else {
        format!("Content-Length: {total}")
    };
    let head = format!("POST {path} HTTP/1.1\r\nHost: {address}\r\n{headers}{framing}\r\n\r\n");
    let written = sent.clone();
    let writing = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await.unwrap();
        let chunk = vec![b'a'; 16 * 1024];
        let frame = [
            format!("{:x}\r\n", chunk.len()).into_bytes(),
            chunk.clone(),
            b"\r\n".to_vec(),
        ]
        .concat();
        while written.load(Ordering::Relaxed) < total {
            let piece = if chunked { &frame } else { &chunk };
            if writer.write_all(piece).await.is_err() {
                return;
            }
            written.fetch_add(chunk.len(), Ordering::Relaxed);
        }
        if chunked {
            let _ = writer.write_all(b"0\r\n\r\n").await;
        }
    });
    let mut answer = Vec::new();
    let mut buffer = [0u8; 8192];
    let (status, body, sent_at_answer) = loop {
        let read = tokio::time::timeout(Duration::from_secs(10), reader.read(&mut buffer))
            .await
            .expect("the service answers within 10 s")
            .unwrap();
        assert!(read > 0, "connection closed without an answer");
        answer.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&answer).into_owned();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .expect("a sized answer");
        if body.len() >= length {
            let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
            break (
                status,
                serde_json::from_str(&body[..length]).unwrap(),
                sent.load(Ordering::Relaxed),
            );
        }
    };
    writing.abort();
    Refusal {
        status,
        body,
        sent: sent_at_answer,
    }
}

#[tokio::test]
async fn oversized_bodies_are_refused_unread_before_authentication() {
    let service = Service::start().await;
    let address = service.address();
    // Far more than any socket buffers hold: the answer can only come before the end.
    let total = 256 * 1024 * 1024;
    let too_large = json!({"success": false, "message": "Request body is larger than 65536 bytes"});
    let rss_before = service.memory_kib("VmRSS");
    for (path, headers) in [
        (
            "/api/v1/admin/partners",
            "Content-Type: application/json\r\n",
        ),
        (
            "/support/login",
            "Content-Type: application/x-www-form-urlencoded\r\n",
        ),
    ] {
        for chunked in [false, true] {
            let refusal = send_huge(&address, path, headers, total, chunked).await;
            assert_eq!(refusal.status, 413, "{path} chunked={chunked}");
            assert_eq!(refusal.body, too_large, "{path} chunked={chunked}");
            assert!(
                refusal.sent < total / 8,
                "{path} chunked={chunked}: {} bytes sent before the answer",
                refusal.sent
            );
        }
    }
    // Ingest checks the API key first: a stranger's body is never read at all.
    let refusal = send_huge(
        &address,
        BATCH_PATH,
        "Content-Type: application/json\r\nx-tenant-id: t\r\nx-sub-tenant-id: s\r\n",
        total,
        true,
    )
    .await;
    assert_eq!(refusal.status, 403);
    assert!(refusal.sent < total / 8);

    let growth = service.memory_kib("VmRSS").saturating_sub(rss_before);
    assert!(growth < 16 * 1024, "the service grew by {growth} KiB");

    // A small admin body still works, and the limit does not hide a wrong token.
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{}/api/v1/admin/partners", service.base))
        .bearer_auth("hostile-admin-token")
        .json(&json!({"id": "partner-b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let response = client
        .post(format!("{}/api/v1/admin/partners", service.base))
        .bearer_auth("hostile-admin-token-but-longer")
        .json(&json!({"id": "partner-c"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
}
