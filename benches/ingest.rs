//! Ingest benchmark: the real service on a fresh database, 8 concurrent clients posting
//! batches of 50 calls for `BENCH_SECONDS` (default 20), then the raw PostgreSQL ceiling for
//! the same number of event rows (transactions of 50 rows over 8 connections).
//!
//! Run: `cargo bench --bench ingest` (uses `DATABASE_URL`, default the local server; it creates
//! and drops its own database). Everything stays on 127.0.0.1.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use callingest::app::Application;
use callingest::config::{DatabaseConfig, HttpConfig, Role, Secret, ServeConfig};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgPool};

/// The master key of the bench's service (fixed: a bench may reuse its database).
const BENCH_MASTER_KEY: &str = "YmVuY2ggbWFzdGVyIGtleSBvZiBjYWxsaW5nZXN0ISE=";

const CLIENTS: usize = 8;
const CALLS_PER_BATCH: usize = 50;

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
        "customer": {"id": "customer123", "name": "Jane Smith", "email": "customer@example.com",
                     "disposition_status": "interested"},
        "industry": "Technology",
        "function": "Sales",
        "callback_url": "https://partner.invalid/callback",
        "metadata": {"campaign": "Q1 Outreach", "source": "Website"}
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let server: PgConnectOptions = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
        .parse()?;
    let name = format!("callingest_bench_{}", uuid::Uuid::new_v4().simple());
    let mut admin = server.clone().database("postgres").connect().await?;
    sqlx::query(&format!("create database \"{name}\""))
        .execute(&mut admin)
        .await?;
    let url = server.clone().database(&name).to_url_lossy().to_string();

    let result = run(&url, seconds).await;

    sqlx::query(&format!("drop database if exists \"{name}\" with (force)"))
        .execute(&mut admin)
        .await?;
    result
}

async fn run(url: &str, seconds: u64) -> anyhow::Result<()> {
    let config = ServeConfig {
        database: DatabaseConfig {
            url: Secret::new(url),
            max_connections: 16,
            acquire_timeout: std::time::Duration::from_secs(5),
            connect_deadline: std::time::Duration::from_secs(120),
            master_key: Some(Secret::new(BENCH_MASTER_KEY)),
            previous_master_key: None,
        },
        // Ingest alone: processing would compete for the same two cores.
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
    let address = app.address().expect("the API role binds");
    let endpoint = format!("http://{address}/api/v1/partner/ingest/batch-call");
    let pool = app.pool().clone();
    tokio::spawn(app.run());
    let partner = callingest::partners::create_partner(&pool, "bench", None, 10_000_000).await?;
    let partner = Arc::new(partner);

    println!("ingest: {CLIENTS} clients x batches of {CALLS_PER_BATCH} calls for {seconds} s");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let batches = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = Vec::new();
    for client_no in 0..CLIENTS {
        let (endpoint, partner, batches) = (endpoint.clone(), partner.clone(), batches.clone());
        clients.push(tokio::spawn(async move {
            let http = callingest::http_client::builder()
                .build()
                .expect("an HTTP client");
            let mut latencies = Histogram::<u64>::new(3).unwrap();
            let mut n = 0usize;
            while Instant::now() < deadline {
                let items: Vec<Value> = (0..CALLS_PER_BATCH)
                    .map(|i| item(&format!("c{client_no}-{n}-{i}")))
                    .collect();
                let body = serde_json::to_vec(&json!({ "data": items })).unwrap();
                let sent = Instant::now();
                let response = http
                    .post(&endpoint)
                    .header("content-type", "application/json")
                    .header("x-partner-id", &partner.partner_id)
                    .header("x-api-key", &partner.api_key)
                    .header("x-tenant-id", "tenant1")
                    .header("x-sub-tenant-id", "subtenant1")
                    .body(body)
                    .send()
                    .await
                    .expect("request sent");
                assert_eq!(
                    response.status(),
                    200,
                    "{}",
                    response.text().await.unwrap_or_default()
                );
                let _ = response.bytes().await;
                latencies.record(sent.elapsed().as_micros() as u64).unwrap();
                batches.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
            latencies
        }));
    }
    let mut latencies = Histogram::<u64>::new(3).unwrap();
    for client in clients {
        latencies.add(client.await?).unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let calls = batches.load(Ordering::Relaxed) * CALLS_PER_BATCH;
    let stored: i64 =
        sqlx::query_scalar("select count(*) from events where event_type = 'CallAccepted'")
            .fetch_one(&pool)
            .await?;
    assert_eq!(stored as usize, calls, "every answered call is stored");
    println!(
        "ingest: {calls} calls accepted in {elapsed:.1} s = {:.0} calls/s; batch latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        calls as f64 / elapsed,
        latencies.value_at_quantile(0.50) as f64 / 1000.0,
        latencies.value_at_quantile(0.99) as f64 / 1000.0,
        latencies.max() as f64 / 1000.0,
    );

    postgres_ceiling(&pool, calls).await
}

/// The same number of event rows, inserted straight into a copy of the events table in
/// transactions of 50 rows over 8 connections: what PostgreSQL alone can do on this machine.
async fn postgres_ceiling(pool: &PgPool, rows: usize) -> anyhow::Result<()> {
    sqlx::query("create table ceiling_events (like events including defaults including identity including indexes)")
        .execute(pool)
        .await?;
    let payload: String = sqlx::query_scalar(
        "select payload::text from events where event_type = 'CallAccepted' limit 1",
    )
    .fetch_one(pool)
    .await?;
    let transactions = rows.div_ceil(CALLS_PER_BATCH);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..CLIENTS {
        let (pool, payload, next) = (pool.clone(), payload.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let tx_no = next.fetch_add(1, Ordering::Relaxed);
                if tx_no >= transactions {
                    break;
                }
                let ids: Vec<String> = (0..CALLS_PER_BATCH).map(|i| format!("ceiling:{tx_no}-{i}")).collect();
                let mut tx = pool.begin().await?;
                sqlx::query(
                    "insert into ceiling_events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
                     select 'Call', id, 1, 'CallAccepted', '1', $2::jsonb, '{}'::jsonb from unnest($1::text[]) as t(id)",
                )
                .bind(&ids)
                .bind(&payload)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            }
            Ok::<_, sqlx::Error>(())
        }));
    }
    for worker in workers {
        worker.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "postgres ceiling: {} event rows in {elapsed:.1} s = {:.0} rows/s (transactions of {CALLS_PER_BATCH}, {CLIENTS} connections)",
        transactions * CALLS_PER_BATCH,
        (transactions * CALLS_PER_BATCH) as f64 / elapsed
    );
    Ok(())
}
