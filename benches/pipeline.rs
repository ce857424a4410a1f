//! Pipeline benchmark, on a fresh database, everything on 127.0.0.1:
//!
//! 1. Projector replay: 100,000 accepted calls, then each projection rebuilt (events/s).
//! 2. Latency through the whole service at a steady trickle (real recording server, real HTTPS
//!    callback receiver): accepted → fetch started (pickup), and processing completed →
//!    callback delivered, p50/p99.
//! 3. Callback throughput: many outcomes due at once, delivered to a receiver answering 200.
//! 4. Listing: `GET /api/v1/partner/calls` pages over 1,000,000 call rows, 50 concurrent
//!    readers, p50/p99, and the query plan.
//!
//! 5. Fairness: partner B's backlog keeps every worker slot busy while partner A submits one
//!    call every 2 s: how soon A's calls start (fetch, and transcription when the bench is
//!    built with `--features whisper` and `CALLINGEST_WHISPER_MODEL` names a model), B's
//!    throughput with and without A, and the claim's plans and time over 1,000,000 queued jobs
//!    of 1,000 partners.
//!
//! Run: `cargo bench --bench pipeline` (`BENCH_CALLS`, default 100000, sets part 1's size).

#[path = "pipeline/fairness.rs"]
mod fairness;

// The HTTPS receiver of the tests (a fixture of their harness); not all of it is used here.
#[path = "../tests/api/helpers/callback_receiver.rs"]
#[allow(dead_code, unused_imports)]
mod callback_receiver;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use callback_receiver::{Receiver, Reply, TestCa};
use callingest::app::Application;
use callingest::callbacks::{CallbackSender, CallbackSettings};
use callingest::config::{DatabaseConfig, HttpConfig, Role, Secret, ServeConfig, WorkersConfig};
use callingest::event_store::{self, execute};
use callingest::ingest::{IngestService, RequestContext, Submission};
use callingest::jobs::{PoolSettings, Runner, Shutdown, CALLBACKS};
use callingest_domain::call::{
    AudioAnalytics, Call, CallCommand, CallEvent, CallbackDelivered, FetchSuccess,
    ProcessingCompleted, RecordingAnalyzed, RecordingFetchStarted, RecordingFetched,
    ResultsSummary,
};
use callingest_domain::submission::validate_batch;
use callingest_domain::values::{PartnerId, TenantId};
use callingest_projections::notifications::NotificationHub;
use callingest_projections::projector::EVENTS_CHANNEL;
use callingest_projections::Projector;
use cqrs_es::DomainEvent;
use hdrhistogram::Histogram;
use poem::listener::{Acceptor, Listener, TcpListener};
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgPool};

/// The master key of the bench's service (fixed: a bench may reuse its database).
const BENCH_MASTER_KEY: &str = "YmVuY2ggbWFzdGVyIGtleSBvZiBjYWxsaW5nZXN0ISE=";

fn bench_master_key() -> callingest_privacy::MasterKey {
    callingest_privacy::MasterKey::from_base64(BENCH_MASTER_KEY).expect("a valid key")
}

fn bench_privacy() -> callingest_privacy::Privacy {
    callingest_privacy::Privacy::new(&bench_master_key())
}

/// The bench database, migrated, its keyring holding the bench's master key as a start of the
/// service records it (key rows name the master key that wrapped them).
async fn prepare(url: &str) -> anyhow::Result<PgPool> {
    let pool = callingest::db::prepare(&database_config(url)).await?;
    callingest_privacy::keyring::open(&pool, &bench_master_key(), None).await?;
    Ok(pool)
}

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/audio/tests/fixtures/left-only.wav"
);

fn item(id: &str, recording_url: &str, callback_url: &str) -> Value {
    json!({
        "call": {"id": id, "recording_url": recording_url, "start_time": "2023-01-01T10:00:00Z",
                 "end_time": "2023-01-01T10:30:00Z", "contact_number": "+1234567890"},
        "agent": {"id": "agent-1"}, "customer": {"id": "customer-1"},
        "callback_url": callback_url, "metadata": {"campaign": "bench"}
    })
}

struct BenchDb {
    admin: sqlx::PgConnection,
    name: String,
    url: String,
}

async fn fresh_database() -> anyhow::Result<BenchDb> {
    let server: PgConnectOptions = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
        .parse()?;
    let name = format!("callingest_bench_{}", uuid::Uuid::new_v4().simple());
    let mut admin = server.clone().database("postgres").connect().await?;
    sqlx::query(&format!("create database \"{name}\""))
        .execute(&mut admin)
        .await?;
    let url = server.database(&name).to_url_lossy().to_string();
    Ok(BenchDb { admin, name, url })
}

impl BenchDb {
    async fn drop(mut self) -> anyhow::Result<()> {
        sqlx::query(&format!(
            "drop database if exists \"{}\" with (force)",
            self.name
        ))
        .execute(&mut self.admin)
        .await?;
        Ok(())
    }
}

fn database_config(url: &str) -> DatabaseConfig {
    DatabaseConfig {
        url: Secret::new(url),
        max_connections: 24,
        acquire_timeout: Duration::from_secs(10),
        connect_deadline: Duration::from_secs(120),
        master_key: Some(Secret::new(BENCH_MASTER_KEY)),
        previous_master_key: None,
    }
}

/// The service on `url`, listening on a free loopback port.
fn serve_config(url: &str, role: Role, workers: WorkersConfig) -> ServeConfig {
    ServeConfig {
        database: database_config(url),
        role,
        http: HttpConfig {
            listen: "127.0.0.1:0".parse().expect("a literal address"),
            admin_token: None,
            ..Default::default()
        },
        workers,
        replica: Default::default(),
    }
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

async fn submit(ingest: &IngestService, items: Vec<Value>) -> anyhow::Result<()> {
    submit_as(ingest, "bench", items).await
}

async fn submit_as(ingest: &IngestService, partner: &str, items: Vec<Value>) -> anyhow::Result<()> {
    let calls = validate_batch(&json!({ "data": items })).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    ingest
        .submit(&Submission {
            partner_id: PartnerId::parse(partner).unwrap(),
            tenant_id: TenantId::parse("tenant1").unwrap(),
            sub_tenant_id: TenantId::parse("sub1").unwrap(),
            calls,
            received_at: chrono::Utc::now(),
            request: RequestContext::default(),
        })
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let calls: usize = std::env::var("BENCH_CALLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    // BENCH_PARTS picks parts, e.g. "1" or "23" (default all).
    let parts = std::env::var("BENCH_PARTS").unwrap_or_else(|_| "12345".into());
    if parts.contains('1') {
        replay(calls).await?;
    }
    if parts.contains('2') {
        latency().await?;
    }
    if parts.contains('3') {
        callback_throughput(2_000).await?;
    }
    if parts.contains('4') {
        listing(1_000_000).await?;
    }
    if parts.contains('5') {
        fairness::run().await?;
    }
    Ok(())
}

/// Part 1: projector replay rate.
async fn replay(calls: usize) -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let pool = prepare(&db.url).await?;
    callingest::partners::create_partner(&pool, "bench", None, 1_000_000).await?;
    let ingest = Arc::new(IngestService::new(pool.clone(), &bench_privacy()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..8 {
        let ingest = ingest.clone();
        tasks.push(tokio::spawn(async move {
            for batch in (client..calls / 50).step_by(8) {
                let items = (0..50)
                    .map(|i| {
                        item(
                            &format!("c{batch}-{i}"),
                            "https://r.invalid/a.wav",
                            "https://p.invalid/cb",
                        )
                    })
                    .collect();
                submit(&ingest, items).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let events: i64 = sqlx::query_scalar("select count(*) from events")
        .fetch_one(&pool)
        .await?;
    println!(
        "replay: {calls} calls accepted ({events} events) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    rebuild_all(&pool, "acceptances only").await?;

    // The same calls with the rest of a real history: fetch, analysis, completion, callback.
    let started = Instant::now();
    let history: Vec<(i64, String, String)> = history_events()
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            (
                i as i64 + 2,
                e.event_type(),
                serde_json::to_string(&e).unwrap(),
            )
        })
        .collect();
    sqlx::query(
        "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         select 'Call', a.aggregate_id, h.sequence, h.event_type, '1', h.payload::jsonb, '{}'
         from (select aggregate_id from events where event_type = 'CallAccepted') a
         cross join unnest($1::bigint[], $2::text[], $3::text[]) as h(sequence, event_type, payload)
         order by a.aggregate_id, h.sequence",
    )
    .bind(history.iter().map(|h| h.0).collect::<Vec<_>>())
    .bind(history.iter().map(|h| h.1.clone()).collect::<Vec<_>>())
    .bind(history.iter().map(|h| h.2.clone()).collect::<Vec<_>>())
    .execute(&pool)
    .await?;
    println!(
        "replay: {} more events appended (full histories) in {:.1} s",
        calls * history.len(),
        started.elapsed().as_secs_f64()
    );
    rebuild_all(&pool, "full histories").await?;
    pool.close().await;
    db.drop().await
}

async fn rebuild_all(pool: &PgPool, label: &str) -> anyhow::Result<()> {
    for projection in callingest_projections::all(&bench_privacy()) {
        let name = projection.name();
        let projector = Projector::new(pool.clone(), projection);
        let started = Instant::now();
        projector.reset().await?;
        let applied = projector.catch_up().await?;
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "replay ({label}): {name}: {applied} events in {seconds:.2} s = {:.0} events/s",
            applied as f64 / seconds
        );
    }
    Ok(())
}

/// What follows `CallAccepted` in a processed call's life, as its events.
fn history_events() -> Vec<CallEvent> {
    let at = chrono::Utc::now();
    let analytics = match &completion()[2] {
        CallCommand::RecordAnalysis { analytics, .. } => analytics.clone(),
        _ => unreachable!(),
    };
    vec![
        CallEvent::RecordingFetchStarted(RecordingFetchStarted {
            attempt: 1,
            started_at: at,
        }),
        CallEvent::RecordingFetched(RecordingFetched {
            attempt: 1,
            bytes: 64_000,
            sha256: "ab".repeat(32),
            content_type: Some("audio/wav".into()),
            format: Some("wav".into()),
            fetched_at: at,
        }),
        CallEvent::RecordingAnalyzed(RecordingAnalyzed {
            analytics: analytics.clone(),
            analyzed_at: at,
            transcription_due: false,
        }),
        CallEvent::ProcessingCompleted(ProcessingCompleted {
            completed_at: at,
            callback_due: true,
            processing_time_ms: 1_200,
            results: ResultsSummary {
                transcription_available: false,
                analytics_available: true,
                duration_ms: analytics.duration_ms,
                agent_talk_ms: analytics.agent_talk_ms,
                customer_talk_ms: analytics.customer_talk_ms,
                silence_ratio: analytics.silence_ratio,
            },
        }),
        CallEvent::CallbackDelivered(CallbackDelivered {
            attempt: 1,
            status_code: 200,
            response_time_ms: 12,
            delivered_at: at,
        }),
    ]
}

/// Starts a loopback recording server serving the left-only WAV fixture at `/a.wav`.
async fn recording_server() -> anyhow::Result<String> {
    slow_recording_server(FIXTURE, Duration::ZERO).await
}

/// Serves `file` at `/r.wav` (or `/r.mp3`), answering each request after `delay`.
async fn slow_recording_server(file: &str, delay: Duration) -> anyhow::Result<String> {
    let bytes = std::fs::read(file)?;
    let acceptor = TcpListener::bind("127.0.0.1:0").into_acceptor().await?;
    let port = acceptor.local_addr()[0].as_socket_addr().unwrap().port();
    let name = if file.ends_with(".mp3") {
        "r.mp3"
    } else {
        "r.wav"
    };
    let route = poem::Route::new().at(
        format!("/{name}"),
        poem::get(poem::endpoint::make(move |_| {
            let bytes = bytes.clone();
            async move {
                tokio::time::sleep(delay).await;
                bytes
            }
        })),
    );
    tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(route));
    Ok(format!("http://127.0.0.1:{port}/{name}"))
}

/// Part 2: latencies through the running service at 100 calls/s for 5 s.
async fn latency() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let ca = TestCa::new();
    let receiver = Receiver::start(&ca, vec![Reply::Status(200)]).await;
    let recording = recording_server().await?;
    let mut processing = WorkersConfig::default();
    processing.outbound.allow_private_urls = true;
    processing.outbound.extra_ca_file = Some(ca.ca_file().to_owned());
    let config = serve_config(&db.url, Role::All, processing);
    let app = Application::build(&config).await?;
    let pool = app.pool().clone();
    let server = tokio::spawn(app.run());
    callingest::partners::create_partner(&pool, "bench", None, 1_000_000).await?;
    let ingest = IngestService::new(pool.clone(), &bench_privacy());
    let (batches, per_batch) = (50, 10);
    for b in 0..batches {
        let items = (0..per_batch)
            .map(|i| item(&format!("l{b}-{i}"), &recording, &receiver.url()))
            .collect();
        submit(&ingest, items).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total = batches * per_batch;
    receiver
        .wait_for_requests(total, Duration::from_secs(120))
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&pool, "CallbackDelivered").await? < total as i64 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "deliveries were not all recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let times = event_times(&pool).await?;
    let (mut pickup, mut callback, mut end_to_end) = (hist(), hist(), hist());
    for t in times.values() {
        pickup.record(micros(t["CallAccepted"], t["RecordingFetchStarted"]))?;
        callback.record(micros(t["ProcessingCompleted"], t["CallbackDelivered"]))?;
        end_to_end.record(micros(t["CallAccepted"], t["CallbackDelivered"]))?;
    }
    println!(
        "latency: {total} calls at 100/s: accepted→fetch started p50 {:.1} ms p99 {:.1} ms; \
         completed→callback delivered p50 {:.1} ms p99 {:.1} ms; accepted→delivered p50 {:.1} ms p99 {:.1} ms",
        ms(&pickup, 0.5), ms(&pickup, 0.99), ms(&callback, 0.5), ms(&callback, 0.99),
        ms(&end_to_end, 0.5), ms(&end_to_end, 0.99)
    );
    server.abort();
    let _ = server.await;
    pool.close().await;
    db.drop().await
}

/// Part 3: `n` outcomes due at once, delivered by `BENCH_SENDERS` (default 32) senders to a
/// receiver answering 200.
async fn callback_throughput(n: usize) -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let ca = TestCa::new();
    let receiver = Receiver::start(&ca, vec![Reply::Status(200)]).await;
    let pool = prepare(&db.url).await?;
    callingest::partners::create_partner(&pool, "bench", None, 1_000_000).await?;
    let ingest = IngestService::new(pool.clone(), &bench_privacy());
    for b in 0..n / 50 {
        let items = (0..50)
            .map(|i| {
                item(
                    &format!("t{b}-{i}"),
                    "https://r.invalid/a.wav",
                    &receiver.url(),
                )
            })
            .collect();
        submit(&ingest, items).await?;
    }
    // Complete every call directly through its aggregate (no recording to fetch).
    let ids: Vec<String> =
        sqlx::query_scalar("select aggregate_id from events where event_type = 'CallAccepted'")
            .fetch_all(&pool)
            .await?;
    let ids = Arc::new(ids);
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let (pool, ids) = (pool.clone(), ids.clone());
        tasks.push(tokio::spawn(async move {
            let store = event_store::store::<Call>(pool, &bench_privacy());
            for id in ids.iter().skip(worker).step_by(8) {
                for command in completion() {
                    execute(&store, id, command, &HashMap::new()).await?;
                }
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let settings = CallbackSettings {
        timeout: Duration::from_secs(10),
        backoff_base_ms: 30_000,
        allow_private: true,
        extra_ca_file: Some(ca.ca_file().to_owned()),
    };
    let started = Instant::now();
    let channels = [EVENTS_CHANNEL, CALLBACKS.channel];
    let (hub, listener) = NotificationHub::start(pool.clone(), &channels);
    let projector = Projector::new(
        pool.clone(),
        Arc::new(callingest_projections::callback_deliveries::CallbackDeliveries),
    );
    let mut tasks = vec![
        listener,
        tokio::spawn(projector.run(hub.subscribe(EVENTS_CHANNEL))),
    ];
    let senders: usize = std::env::var("BENCH_SENDERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32);
    let runner = Arc::new(Runner::new(
        pool.clone(),
        &bench_privacy(),
        &CALLBACKS,
        Arc::new(CallbackSender::new(
            pool.clone(),
            &bench_privacy(),
            &settings,
        )?),
        PoolSettings {
            concurrency: senders,
            ..WorkersConfig::default().callback_pool()
        },
        Shutdown::new(),
    ));
    for s in 0..senders {
        tasks.push(tokio::spawn(
            runner
                .clone()
                .run(format!("bench-{s}"), hub.subscribe(CALLBACKS.channel)),
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while count(&pool, "CallbackDelivered").await? < n as i64 {
        anyhow::ensure!(Instant::now() < deadline, "deliveries did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "callbacks: {n} signed deliveries over HTTPS in {seconds:.2} s = {:.0} deliveries/s ({senders} senders; receiver got {})",
        n as f64 / seconds,
        receiver.requests().len()
    );
    for task in tasks {
        task.abort();
    }
    pool.close().await;
    db.drop().await
}

fn completion() -> Vec<CallCommand> {
    let now = chrono::Utc::now();
    vec![
        CallCommand::StartFetch {
            max_attempts: 5,
            at: now,
        },
        CallCommand::RecordFetchSuccess(FetchSuccess {
            bytes: 1,
            sha256: "00".repeat(32),
            content_type: None,
            format: Some("wav".into()),
            at: now,
        }),
        CallCommand::RecordAnalysis {
            transcribe: false,
            analytics: AudioAnalytics {
                duration_ms: 1_000,
                sample_rate: 8_000,
                channels: 2,
                codec: "pcm_s16le".into(),
                agent_talk_ms: 500,
                customer_talk_ms: Some(300),
                silence_ratio: 0.2,
                longest_silence_ms: 100,
                overlap_ms: 0,
                mean_dbfs: Some(-20.0),
                peak_dbfs: Some(-6.0),
                clipping_ratio: 0.0,
                detector_version: Some(2),
                interaction: Default::default(),
            },
            at: now,
        },
    ]
}

fn hist() -> Histogram<u64> {
    Histogram::new(3).unwrap()
}

fn micros(from: chrono::DateTime<chrono::Utc>, to: chrono::DateTime<chrono::Utc>) -> u64 {
    (to - from).num_microseconds().unwrap_or(0).max(0) as u64
}

async fn count(pool: &PgPool, event_type: &str) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("select count(*) from events where event_type = $1")
            .bind(event_type)
            .fetch_one(pool)
            .await?,
    )
}

/// When each call's first event of each type was recorded.
async fn event_times(
    pool: &PgPool,
) -> anyhow::Result<HashMap<String, HashMap<String, chrono::DateTime<chrono::Utc>>>> {
    let rows: Vec<StoredEventTime> = sqlx::query_as(
        "select aggregate_id, event_type, min(recorded_at) as recorded_at from events
         where aggregate_type = 'Call' group by aggregate_id, event_type",
    )
    .fetch_all(pool)
    .await?;
    let mut times: HashMap<String, HashMap<String, _>> = HashMap::new();
    for row in rows {
        times
            .entry(row.aggregate_id)
            .or_default()
            .insert(row.event_type, row.recorded_at);
    }
    Ok(times)
}

#[derive(sqlx::FromRow)]
struct StoredEventTime {
    aggregate_id: String,
    event_type: String,
    recorded_at: chrono::DateTime<chrono::Utc>,
}

/// Part 4: the call listing over `rows` call rows with 50 concurrent readers.
/// The same pages straight from PostgreSQL (the service's query and row decoding, no HTTP, no
/// auth): 50 tasks, one connection each, for 10 s. What the database alone allows on this
/// machine bounds what the HTTP listing can reach.
async fn listing_database_ceiling(url: &str) -> anyhow::Result<()> {
    use callingest::queries::calls::{list_calls, CallFilter, Cursor};
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(50)
        .connect(url)
        .await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let filter = CallFilter {
                partner_id: Some("bench".into()),
                ..CallFilter::default()
            };
            let mut latencies = hist();
            let mut cursor: Option<Cursor> = None;
            while Instant::now() < deadline {
                let sent = Instant::now();
                let (_, next) = list_calls(&pool, &filter, cursor.as_ref(), 100).await?;
                latencies.record(sent.elapsed().as_micros() as u64)?;
                cursor = next;
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = hist();
    for task in tasks {
        latencies.add(task.await??)?;
    }
    println!(
        "listing: database alone, {} pages of 100 by 50 connections in 10 s: p50 {:.1} ms, p99 {:.1} ms",
        latencies.len(),
        ms(&latencies, 0.5),
        ms(&latencies, 0.99),
    );
    pool.close().await;
    Ok(())
}

/// A page of `GET /calls` as the listing readers check it.
#[derive(serde::Deserialize)]
struct ListingPage {
    calls: Vec<serde::de::IgnoredAny>,
    next_cursor: Option<String>,
}

async fn listing(rows: i64) -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let config = serve_config(&db.url, Role::Api, WorkersConfig::default());
    let app = Application::build(&config).await?;
    let address = app.address().expect("the API role binds");
    let pool = app.pool().clone();
    let server = tokio::spawn(app.run());
    let partner =
        Arc::new(callingest::partners::create_partner(&pool, "bench", None, 1_000_000).await?);
    // 20 partners; "bench" owns one row in 20. Statuses and tenants vary.
    let started = Instant::now();
    sqlx::query(
        "insert into call (partner_id, call_id, tenant_id, sub_tenant_id, batch_id, agent_id, customer_id,
                           contact_number, start_time, end_time, call_duration_ms, has_callback, status,
                           accepted_at, fetch_attempts, duplicate_submissions, updated_at)
         select case when g % 20 = 0 then 'bench' else 'p' || (g % 20) end, 'c' || g, 't' || (g % 7), 's',
                gen_random_uuid(), 'agent' || (g % 100), 'cust' || g, '+1234567890',
                now() - make_interval(secs => g), now() - make_interval(secs => g) + interval '5 minutes',
                300000, true,
                (array['completed','completed','completed','failed','accepted'])[1 + g % 5],
                now() - make_interval(secs => g), 1, 0, now()
         from generate_series(1, $1) g",
    )
    .bind(rows)
    .execute(&pool)
    .await?;
    sqlx::query("analyze call").execute(&pool).await?;
    println!(
        "listing: {rows} call rows inserted in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let base = format!("http://{address}/api/v1/partner/calls");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut readers = Vec::new();
    for reader in 0..50 {
        let (base, partner) = (base.clone(), partner.clone());
        readers.push(tokio::spawn(async move {
            let http = callingest::http_client::builder()
                .build()
                .expect("an HTTP client");
            let mut latencies = hist();
            let mut cursor: Option<String> = None;
            while Instant::now() < deadline {
                // Half the readers page through everything, half through completed calls.
                let mut url = format!("{base}?limit=100");
                if reader % 2 == 1 {
                    url.push_str("&status=completed");
                }
                if let Some(c) = &cursor {
                    url.push_str(&format!("&cursor={c}"));
                }
                let sent = Instant::now();
                // Read whole but not kept: the load generator shares the 2 cores with the
                // service and should cost as little as a separate client machine would.
                let page: ListingPage = http
                    .get(&url)
                    .header("x-partner-id", &partner.partner_id)
                    .header("x-api-key", &partner.api_key)
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                latencies.record(sent.elapsed().as_micros() as u64)?;
                anyhow::ensure!(page.calls.len() == 100 || page.next_cursor.is_none());
                cursor = page.next_cursor;
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = hist();
    for reader in readers {
        latencies.add(reader.await??)?;
    }
    println!(
        "listing: {} pages of 100 by 50 readers in 10 s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        ms(&latencies, 0.5),
        ms(&latencies, 0.99),
        latencies.max() as f64 / 1000.0
    );
    listing_database_ceiling(&db.url).await?;
    let plan: Vec<String> = sqlx::query_scalar(
        "explain select call_id from call where partner_id = 'bench' and status = 'completed'
           and (accepted_at, call_id) < (now() - interval '1 day', 'c0')
         order by accepted_at desc, call_id desc limit 100",
    )
    .fetch_all(&pool)
    .await?;
    println!("listing: plan of a filtered page:\n  {}", plan.join("\n  "));
    server.abort();
    let _ = server.await;
    pool.close().await;
    db.drop().await
}
