//! Part 5: fairness between partners, in the fetch and the transcription pools, and the cost
//! of a fair claim over a million queued jobs.

use super::*;

/// Partner A's calls: one every 2 s, this many.
const SAMPLES: usize = 20;
/// Every recording download takes this long (the recording host answers late), so that B's
/// backlog of 1,500 calls keeps the 4 fetch slots busy for longer than A's 40 s.
const DOWNLOAD_DELAY: Duration = Duration::from_millis(150);
const FETCH_BACKLOG: usize = 1_500;

#[derive(Clone, Copy, PartialEq)]
enum Pool {
    Fetch,
    Transcribe,
}

impl Pool {
    fn name(self) -> &'static str {
        match self {
            Pool::Fetch => "fetch",
            Pool::Transcribe => "transcription",
        }
    }
    /// The event that says a job of this pool started, and the one before it that made it due.
    fn started(self) -> (&'static str, &'static str) {
        match self {
            Pool::Fetch => ("CallAccepted", "RecordingFetchStarted"),
            Pool::Transcribe => ("RecordingAnalyzed", "TranscriptionStarted"),
        }
    }
    /// The event that ends a job of this pool.
    fn done(self) -> &'static str {
        match self {
            Pool::Fetch => "RecordingAnalyzed",
            Pool::Transcribe => "TranscriptProduced",
        }
    }
}

pub async fn run() -> anyhow::Result<()> {
    claim_cost(1_000_000, 1_000).await?;
    compare(Pool::Fetch).await?;
    match std::env::var("CALLINGEST_WHISPER_MODEL") {
        Ok(model) if cfg!(feature = "whisper") && std::path::Path::new(&model).exists() => {
            compare(Pool::Transcribe).await?
        }
        _ => println!(
            "fairness, transcription: skipped (build with --features whisper and set \
             CALLINGEST_WHISPER_MODEL)"
        ),
    }
    Ok(())
}

/// B's backlog alone, then with A's trickle: A's start latency and B's throughput drop.
async fn compare(pool: Pool) -> anyhow::Result<()> {
    let alone = backlog_run(pool, false).await?;
    let shared = backlog_run(pool, true).await?;
    let mut waits = shared.a_waits.clone();
    waits.sort_by(f64::total_cmp);
    let quantile =
        |q: f64| waits[((waits.len() as f64 * q).ceil() as usize).clamp(1, waits.len()) - 1];
    println!(
        "fairness, {}: A's {} calls started after p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; \
         B's backlog {:.1} jobs/s alone, {:.1} jobs/s beside A ({:+.1} %); the pool, A and B \
         together: {:.1} jobs/s ({:+.1} %)",
        pool.name(),
        waits.len(),
        quantile(0.5),
        quantile(0.99),
        waits.last().copied().unwrap_or(0.0),
        alone.b_throughput,
        shared.b_throughput,
        (shared.b_throughput / alone.b_throughput - 1.0) * 100.0,
        shared.pool_throughput,
        (shared.pool_throughput / alone.pool_throughput - 1.0) * 100.0
    );
    Ok(())
}

struct BacklogRun {
    /// Milliseconds from due to started, per call of A.
    a_waits: Vec<f64>,
    /// B's jobs finished per second while A was submitting.
    b_throughput: f64,
    /// All jobs (A's and B's) finished per second in the same window: what fairness costs the
    /// pool itself, apart from the share A's calls take.
    pool_throughput: f64,
}

async fn backlog_run(pool_kind: Pool, with_a: bool) -> anyhow::Result<BacklogRun> {
    let db = fresh_database().await?;
    let (url, backlog) = match pool_kind {
        Pool::Fetch => (
            slow_recording_server(FIXTURE, DOWNLOAD_DELAY).await?,
            FETCH_BACKLOG,
        ),
        // About 4 s of speech each, transcribed one call at a time.
        Pool::Transcribe => (
            slow_recording_server(
                concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/audio/tests/fixtures/speech.mp3"
                ),
                Duration::ZERO,
            )
            .await?,
            150,
        ),
    };
    let mut processing = WorkersConfig::default();
    processing.outbound.allow_private_urls = true;
    if pool_kind == Pool::Transcribe {
        processing.transcription.transcriber = callingest::config::TranscriberKind::Whisper;
        processing.transcription.whisper_model = std::env::var("CALLINGEST_WHISPER_MODEL")
            .ok()
            .map(Into::into);
    }
    let config = serve_config(&db.url, Role::All, processing);
    let app = Application::build(&config).await?;
    let pool = app.pool().clone();
    let server = tokio::spawn(app.run());
    for partner in ["a", "b"] {
        callingest::partners::create_partner(&pool, partner, None, 1_000_000).await?;
    }
    let ingest = IngestService::new(pool.clone(), &super::bench_privacy());
    let no_callback = "https://127.0.0.1:9/unused";
    for chunk in 0..backlog.div_ceil(50) {
        let items = (chunk * 50..((chunk + 1) * 50).min(backlog))
            .map(|i| item(&format!("b-{i}"), &url, no_callback))
            .collect();
        submit_as(&ingest, "b", items).await?;
    }
    // Give B's backlog time to fill every slot before A's first call.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let window_start = chrono::Utc::now();
    for i in 0..SAMPLES {
        if with_a {
            submit_as(
                &ingest,
                "a",
                vec![item(&format!("a-{i}"), &url, no_callback)],
            )
            .await?;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let window_end = chrono::Utc::now();
    if with_a {
        // A's last calls may still be on their way to their start.
        let deadline = Instant::now() + Duration::from_secs(120);
        while started_count(&pool, "a:%", pool_kind.started().1).await? < SAMPLES as i64 {
            anyhow::ensure!(Instant::now() < deadline, "A's calls did not all start");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let done_in_window = |like: &'static str| {
        sqlx::query_scalar::<_, i64>(
            "select count(*) from events where aggregate_id like $1 and event_type = $2
             and recorded_at between $3 and $4",
        )
        .bind(like)
        .bind(pool_kind.done())
        .bind(window_start)
        .bind(window_end)
        .fetch_one(&pool)
    };
    let b_done = done_in_window("b:%").await?;
    let all_done = done_in_window("%").await?;
    let b_total: i64 = sqlx::query_scalar(
        "select count(*) from events where aggregate_id like 'b:%' and event_type = $1",
    )
    .bind(pool_kind.done())
    .fetch_one(&pool)
    .await?;
    anyhow::ensure!(
        b_total < backlog as i64,
        "B's backlog ran out during the window ({b_total} of {backlog} done): not a backlog"
    );
    let times = event_times(&pool).await?;
    let (due, started) = pool_kind.started();
    let a_waits = times
        .iter()
        .filter(|(id, _)| id.starts_with("a:"))
        .map(|(_, t)| micros(t[due], t[started]) as f64 / 1000.0)
        .collect();
    let seconds = (window_end - window_start).num_milliseconds() as f64 / 1000.0;
    server.abort();
    let _ = server.await;
    pool.close().await;
    db.drop().await?;
    Ok(BacklogRun {
        a_waits,
        b_throughput: b_done as f64 / seconds,
        pool_throughput: all_done as f64 / seconds,
    })
}

async fn started_count(pool: &PgPool, like: &str, event_type: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "select count(*) from events where aggregate_id like $1 and event_type = $2",
    )
    .bind(like)
    .bind(event_type)
    .fetch_one(pool)
    .await?)
}

/// Claims over `rows` queued fetch jobs spread over `partners` partners: the plans of the two
/// statements of a claim (no sequential scan) and the time of a claim.
async fn claim_cost(rows: i64, partners: i64) -> anyhow::Result<()> {
    use callingest::jobs::{claim_next, FETCH};
    let db = fresh_database().await?;
    let pool = super::prepare(&db.url).await?;
    sqlx::query(
        "insert into processing_job (call_aggregate_id, partner_id, call_id, recording_url, due_at, stage)
         select 'p' || (i % $2) || ':c' || i, 'p' || (i % $2), 'c' || i, 'https://example.com/r.wav',
                now() - interval '1 hour' + i * interval '1 millisecond', 'fetch'
         from generate_series(1, $1) as i",
    )
    .bind(rows)
    .bind(partners)
    .execute(&pool)
    .await?;
    sqlx::query(
        "insert into job_queue_partner (queue, partner_id)
         select 'fetch', 'p' || i from generate_series(0, $1 - 1) as i",
    )
    .bind(partners)
    .execute(&pool)
    .await?;
    sqlx::query("analyze processing_job").execute(&pool).await?;
    sqlx::query("analyze job_queue_partner")
        .execute(&pool)
        .await?;
    let claims = 2_000;
    let started = Instant::now();
    for _ in 0..claims {
        claim_next(&pool, &FETCH, "bench", Duration::from_secs(30))
            .await?
            .ok_or_else(|| anyhow::anyhow!("nothing claimed"))?;
    }
    let per_claim = started.elapsed().as_secs_f64() * 1000.0 / claims as f64;
    let mut plans = String::new();
    for statement in [
        "select partner_id from job_queue_partner where queue = 'fetch' and idle_until <= now()
         order by last_claimed_at limit 8 for update skip locked",
        "select call_aggregate_id from processing_job
         where stage = 'fetch' and partner_id = 'p17' and due_at <= now()
           and (lease_until is null or lease_until < now())
         order by due_at limit 1 for update skip locked",
        "select call_aggregate_id from processing_job
         where stage = 'fetch' and due_at <= now() and (lease_until is null or lease_until < now())
         order by due_at limit 1 for update skip locked",
    ] {
        let plan: Vec<String> = sqlx::query_scalar(&format!("explain {statement}"))
            .fetch_all(&pool)
            .await?;
        plans.push_str(&plan.join("\n"));
        plans.push_str("\n--\n");
    }
    println!(
        "fairness, claims over {rows} queued jobs of {partners} partners: {per_claim:.2} ms per \
         claim ({claims} claims, one at a time); plans (turns, partner's oldest due, fallback):\n{plans}"
    );
    anyhow::ensure!(
        !plans.contains("Seq Scan"),
        "a claim statement scans sequentially"
    );
    pool.close().await;
    db.drop().await
}
