//! Validation benchmark: the bodies that were built to make validation expensive, each at most
//! 5 MiB. First the validator alone (time, and peak heap growth from a counting allocator), then
//! the real service on a fresh database: time to answer, the slowest `/healthz` answer while
//! it works, and the process's peak resident memory growth.
//!
//! Run: `cargo bench --bench validation` (uses `DATABASE_URL`, default the local server; it
//! creates and drops its own database). Everything stays on 127.0.0.1.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use callingest::app::Application;
use callingest::config::{DatabaseConfig, HttpConfig, Role, Secret, ServeConfig};
use callingest_domain::submission::validate_batch_json;
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::ConnectOptions;

/// The master key of the bench's service (fixed: a bench may reuse its database).
const BENCH_MASTER_KEY: &str = "YmVuY2ggbWFzdGVyIGtleSBvZiBjYWxsaW5nZXN0ISE=";

/// The system allocator, counting bytes in use and their peak.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            let now = IN_USE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        unsafe { System.dealloc(pointer, layout) };
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const FIVE_MIB: usize = 5 * 1024 * 1024;

fn item(id: &str) -> Value {
    json!({
        "call": {
            "id": id,
            "recording_url": "https://recordings.invalid/recordings/call.mp3",
            "start_time": "2023-01-01T10:00:00Z",
            "end_time": "2023-01-01T10:30:00Z",
            "contact_number": "+1234567890"
        },
        "agent": {"id": "agent123", "email": "agent@example.com", "name": "John Doe"},
        "customer": {"id": "customer123", "name": "Jane Smith"},
        "industry": "Technology"
    })
}

/// `item` as JSON text without its closing brace, so members can be appended.
fn open_item(id: &str) -> String {
    let text = item(id).to_string();
    text[..text.len() - 1].to_owned()
}

/// `{"data":[` + `repeat` as many times as fits in 5 MiB with `last` + `]}`.
fn data_of(repeat: &str, last: &str) -> Vec<u8> {
    let room = FIVE_MIB - "{\"data\":[]}".len() - last.len();
    format!(
        "{{\"data\":[{}{last}]}}",
        repeat.repeat(room / repeat.len())
    )
    .into_bytes()
}

/// Every shape, its expected status, and whether it is accepted (stored: a fresh call id each
/// time it is sent).
fn shapes(run: usize) -> Vec<(&'static str, Vec<u8>, u16)> {
    let key = "k".repeat(2 * 1024 * 1024);
    let deep_levels = (FIVE_MIB - 20) / 2;
    let wide: Vec<String> = (0..370_000).map(|i| format!("\"k{i:07}\":0")).collect();
    let metadata: Vec<String> = (0..330_000).map(|i| format!("\"m{i:07}\":1")).collect();
    let string_room = FIVE_MIB - open_item("x").len() - 40;
    let zeros_room = (FIVE_MIB - open_item("x").len() - 40) / 2;
    let fifty: Vec<String> = (0..50)
        .map(|i| {
            format!(
                "{},\"blob\":\"{}\"}}",
                open_item(&format!("fifty-{run}-{i}")),
                "b".repeat(FIVE_MIB / 50 - 400)
            )
        })
        .collect();
    let broken: Vec<Value> = (0..50)
        .map(|i| {
            json!({"call": {"id": "", "start_time": i}, "agent": [], "customer": 7,
                        "metadata": {"": [1]}, "custom_fields": [{}, 3]})
        })
        .collect();
    vec![
        ("empty items", data_of("{},", "{}"), 422),
        ("items of wrong types", data_of("[],", "[]"), 422),
        (
            "a wide object (370,000 members)",
            format!("{{\"data\":[{{{}}}]}}", wide.join(",")).into_bytes(),
            422,
        ),
        (
            "deep arrays (2.6 million levels)",
            format!(
                "{{\"data\":[{}{}]}}",
                "[".repeat(deep_levels),
                "]".repeat(deep_levels)
            )
            .into_bytes(),
            400,
        ),
        (
            "a 2 MiB key over 1.4 million zeros",
            format!("{{\"data\":[{{\"{key}\":[{}0]}}]}}", "0,".repeat(1_400_000)).into_bytes(),
            422,
        ),
        (
            "many metadata keys (330,000)",
            format!(
                "{{\"data\":[{},\"metadata\":{{{}}}}}]}}",
                open_item("m"),
                metadata.join(",")
            )
            .into_bytes(),
            422,
        ),
        (
            "NUL characters everywhere",
            data_of("\"\\u0000\",", "1"),
            422,
        ),
        (
            "50 items breaking every rule",
            json!({ "data": broken }).to_string().into_bytes(),
            422,
        ),
        (
            "one valid item, a 5 MiB unknown string",
            format!(
                "{{\"data\":[{},\"blob\":\"{}\"}}]}}",
                open_item(&format!("string-{run}")),
                "s".repeat(string_room)
            )
            .into_bytes(),
            200,
        ),
        (
            "one valid item, an unknown array of 2.6 million zeros",
            format!(
                "{{\"data\":[{},\"blob\":[{}0]}}]}}",
                open_item(&format!("zeros-{run}")),
                "0,".repeat(zeros_room - 1)
            )
            .into_bytes(),
            200,
        ),
        (
            "50 valid items of 100 KiB each",
            format!("{{\"data\":[{}]}}", fifty.join(",")).into_bytes(),
            200,
        ),
    ]
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn validator_alone() {
    println!("validator alone (best of 3; heap growth above the body itself):");
    for (name, body, _) in shapes(0) {
        assert!(body.len() <= FIVE_MIB, "{name}: {} bytes", body.len());
        let mut best = Duration::MAX;
        let mut peak_growth = 0;
        for _ in 0..3 {
            let before = IN_USE.load(Ordering::Relaxed);
            PEAK.store(before, Ordering::Relaxed);
            let started = Instant::now();
            let result = validate_batch_json(&body);
            best = best.min(started.elapsed());
            peak_growth = peak_growth.max(PEAK.load(Ordering::Relaxed) - before);
            drop(result);
        }
        println!(
            "  {name:<55} {:>8.1} ms  peak heap +{:>6.1} MiB",
            best.as_secs_f64() * 1000.0,
            mib(peak_growth)
        );
    }
}

/// The service's `VmRSS` or `VmHWM` in bytes (this process: the service runs in it).
fn memory(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
        .and_then(|kib| kib.parse::<usize>().ok())
        .map_or(0, |kib| kib * 1024)
}

async fn end_to_end(url: &str) -> anyhow::Result<()> {
    let config = ServeConfig {
        database: DatabaseConfig {
            url: Secret::new(url),
            max_connections: 16,
            acquire_timeout: std::time::Duration::from_secs(5),
            connect_deadline: std::time::Duration::from_secs(60),
            master_key: Some(Secret::new(BENCH_MASTER_KEY)),
            previous_master_key: None,
        },
        role: Role::Api,
        http: HttpConfig {
            listen: "127.0.0.1:0".parse()?,
            admin_token: None,
            ..Default::default()
        },
        workers: Default::default(),
        replica: Default::default(),
    };
    let app = Application::build(&config).await?;
    let base = format!("http://{}", app.address().expect("the API role binds"));
    let pool = app.pool().clone();
    tokio::spawn(app.run());
    let partner = callingest::partners::create_partner(&pool, "bench", None, 10_000_000).await?;
    let client = callingest::http_client::builder()
        .build()
        .expect("an HTTP client");

    println!(
        "service end to end (time to answer, slowest /healthz polled every 5 ms meanwhile, peak \
         RSS growth):"
    );
    for (name, body, status) in shapes(1) {
        let stop = Arc::new(AtomicBool::new(false));
        let slowest = Arc::new(AtomicU64::new(0));
        let watcher = {
            let (base, stop, slowest) = (base.clone(), stop.clone(), slowest.clone());
            tokio::spawn(async move {
                let client = callingest::http_client::builder()
                    .build()
                    .expect("an HTTP client");
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let _ = client.get(format!("{base}/healthz")).send().await;
                    slowest.fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let rss_before = memory("VmRSS");
        let started = Instant::now();
        let response = client
            .post(format!("{base}/api/v1/partner/ingest/batch-call"))
            .header("content-type", "application/json")
            .header("x-partner-id", &partner.partner_id)
            .header("x-api-key", &partner.api_key)
            .header("x-tenant-id", "t")
            .header("x-sub-tenant-id", "s")
            .body(body)
            .send()
            .await?;
        let answered = response.status().as_u16();
        let _ = response.bytes().await?;
        let elapsed = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        watcher.await?;
        let growth = memory("VmHWM").saturating_sub(rss_before);
        let check = if answered == status {
            ""
        } else {
            "  UNEXPECTED"
        };
        println!(
            "  {name:<55} {answered} {:>8.1} ms  /healthz max {:>6.1} ms  peak RSS +{:>6.1} MiB{check}",
            elapsed.as_secs_f64() * 1000.0,
            slowest.load(Ordering::Relaxed) as f64 / 1000.0,
            mib(growth)
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    validator_alone();

    let server: PgConnectOptions = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
        .parse()?;
    let name = format!("callingest_bench_{}", uuid::Uuid::new_v4().simple());
    let mut admin = server.clone().database("postgres").connect().await?;
    sqlx::query(&format!("create database \"{name}\""))
        .execute(&mut admin)
        .await?;
    let url = server.clone().database(&name).to_url_lossy().to_string();
    let result = end_to_end(&url).await;
    sqlx::query(&format!("drop database if exists \"{name}\" with (force)"))
        .execute(&mut admin)
        .await?;
    result
}
