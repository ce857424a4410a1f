//! Building and running the service, shared by `callingest serve`, the tests and the benches.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use callingest_domain::call::RetryPolicy;
use callingest_projections::notifications::NotificationHub;
use callingest_projections::projector::EVENTS_CHANNEL;
use callingest_projections::Projector;
use sqlx::PgPool;
use tokio::task::JoinHandle;

use crate::callbacks::CallbackSender;
use crate::config::{ProcessingConfig, ServeConfig};
use crate::health::{Health, Liveness};
use crate::http::server::HttpServer;
use crate::http::AppState;
use crate::processing::fetch::{FetchConfig, Fetcher};
use crate::processing::Worker;
use crate::queue::{CALLBACK_DELIVERIES, PROCESSING_JOBS, TRANSCRIPTION_JOBS};
use crate::transcription::spool::Spool;
use crate::transcription::{TranscriptionWorker, TranscriptionWorkerSettings};

/// Readiness turns red when the background work has not ticked its heartbeat for this long.
const BACKGROUND_MAX_SILENCE: Duration = Duration::from_secs(30);

/// A migrated service with its listener bound and answering the probes, ready to run.
pub struct Application {
    config: ServeConfig,
    pool: PgPool,
    health: Arc<Health>,
    http: HttpServer,
}

impl Application {
    /// Binds the listen address (port 0 picks a free port: see [`Application::address`]) and
    /// answers `/healthz`, `/readyz` and `/metrics` at once, then connects to the database
    /// (creating it if needed, retrying while it cannot be reached, up to
    /// `CALLINGEST_DB_CONNECT_DEADLINE_MS`) and applies migrations. Every role listens.
    pub async fn build(config: &ServeConfig) -> anyhow::Result<Self> {
        let background = config
            .role
            .runs_workers()
            .then(|| Liveness::new(BACKGROUND_MAX_SILENCE));
        let health = Arc::new(Health::starting(background));
        let http = HttpServer::start(config.listen, health.clone(), config.role.runs_api()).await?;
        tracing::info!(address = %http.address(), role = ?config.role, "callingest listening; preparing the database");
        let pool = crate::db::prepare(&config.database).await?;
        health.database_ready(pool.clone());
        Ok(Self {
            config: config.clone(),
            pool,
            health,
            http,
        })
    }

    /// The bound HTTP address. Every role binds one, so this is always `Some`.
    pub fn address(&self) -> Option<SocketAddr> {
        Some(self.http.address())
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Serves until the process gets Ctrl-C / SIGTERM (or the future is dropped): the HTTP
    /// server (the API for the roles that serve it) and the background work (for the roles
    /// that run it), each started and stopped here.
    pub async fn run(self) -> anyhow::Result<()> {
        let background = if self.config.role.runs_workers() {
            spawn_background(&self.pool, &self.config.processing)?
        } else {
            Vec::new()
        };
        // Abort background tasks however this function ends (error, shutdown, or being dropped):
        // everything they do is durable, and leases let another worker finish their jobs.
        let _background = Background::watch(background, self.health.background().cloned());

        if self.config.role.runs_api() {
            let state = AppState::new(self.pool.clone(), self.config.admin_token.clone())
                .with_health(self.health.clone());
            self.http.serve_api(Arc::new(state));
        }
        tracing::info!(address = %self.http.address(), role = ?self.config.role, "callingest running");
        let served = self.http.serve_until(shutdown_signal()).await;
        self.pool.close().await;
        served
    }
}

/// The background tasks of an instance, aborted when dropped, with a watchdog that ticks the
/// instance's heartbeat while every one of them is still running (they all run for ever: one
/// that ended has failed, and readiness turns red).
struct Background {
    tasks: Arc<Vec<JoinHandle<()>>>,
    watchdog: Option<JoinHandle<()>>,
}

impl Background {
    fn watch(tasks: Vec<JoinHandle<()>>, liveness: Option<Liveness>) -> Self {
        let tasks = Arc::new(tasks);
        let watchdog = liveness.map(|liveness| {
            let tasks = tasks.clone();
            tokio::spawn(async move {
                let mut every_second = tokio::time::interval(Duration::from_secs(1));
                loop {
                    every_second.tick().await;
                    if tasks.iter().all(|task| !task.is_finished()) {
                        liveness.tick();
                    } else {
                        tracing::error!(
                            "a background task has stopped; this instance is no longer ready"
                        );
                        return;
                    }
                }
            })
        });
        Self { tasks, watchdog }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(watchdog) = &self.watchdog {
            watchdog.abort();
        }
        for task in self.tasks.iter() {
            task.abort();
        }
    }
}

/// Starts one projector per projection, the processing workers and the callback senders.
pub fn spawn_background(
    pool: &PgPool,
    config: &ProcessingConfig,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    // One LISTEN connection for every projector, worker and sender of this process.
    let channels = [
        EVENTS_CHANNEL,
        PROCESSING_JOBS.channel(),
        CALLBACK_DELIVERIES.channel(),
    ];
    let (hub, listener) = NotificationHub::start(pool.clone(), &channels);
    let mut tasks = vec![listener];
    for projection in callingest_projections::all() {
        let projector = Projector::new(pool.clone(), projection);
        tasks.push(tokio::spawn(projector.run(hub.subscribe(EVENTS_CHANNEL))));
    }
    let fetcher = Arc::new(fetcher(config)?);
    let retry = RetryPolicy {
        max_attempts: config.fetch_max_attempts,
        backoff_base_ms: config.fetch_backoff_base_ms,
    };
    let transcription = &config.transcription;
    let engine = crate::transcription::build_engine(transcription)?;
    let spool_dir = transcription
        .spool_dir
        .clone()
        .unwrap_or_else(Spool::default_dir);
    let spool = Arc::new(
        Spool::open(&spool_dir)
            .with_context(|| format!("could not create the spool {}", spool_dir.display()))?,
    );
    tasks.push(tokio::spawn(sweep_spool(spool.clone())));
    for n in 0..config.worker_concurrency.max(1) {
        let owner = format!("worker-{}-{n}", std::process::id());
        let mut worker = Worker::new(
            pool.clone(),
            fetcher.clone(),
            retry,
            config.job_lease(),
            owner,
        );
        if engine.is_some() {
            worker = worker.handing_over_to(spool.clone());
        }
        tasks.push(tokio::spawn(
            worker.run(hub.subscribe(PROCESSING_JOBS.channel())),
        ));
    }
    // Only where an engine is configured: an instance without one must not take the work of
    // those that have one (handed-over calls wait for an instance with an engine).
    if let Some(engine) = &engine {
        let retry = RetryPolicy {
            max_attempts: transcription.transcribe_max_attempts,
            backoff_base_ms: transcription.transcribe_backoff_base_ms,
        };
        for n in 0..transcription.transcribe_concurrency.max(1) {
            let worker = TranscriptionWorker::new(
                pool.clone(),
                engine.clone(),
                fetcher.clone(),
                spool.clone(),
                TranscriptionWorkerSettings {
                    retry,
                    max_duration: std::time::Duration::from_secs(
                        transcription.transcribe_max_minutes * 60,
                    ),
                    lease: std::time::Duration::from_millis(transcription.transcribe_lease_ms),
                    owner: format!("transcriber-{}-{n}", std::process::id()),
                },
            );
            tasks.push(tokio::spawn(
                worker.run(hub.subscribe(TRANSCRIPTION_JOBS.channel())),
            ));
        }
    }
    let callbacks = config.callback_settings();
    for n in 0..config.callback_concurrency.max(1) {
        let owner = format!("callbacks-{}-{n}", std::process::id());
        let sender = CallbackSender::new(pool.clone(), &callbacks, owner)
            .context("could not set up the callback client")?;
        tasks.push(tokio::spawn(
            sender.run(hub.subscribe(CALLBACK_DELIVERIES.channel())),
        ));
    }
    Ok(tasks)
}

/// Hourly, removes recordings spooled for more than a day: left by a crash, by a refused
/// hand-over, or by a call another instance transcribed. Their calls download them again.
async fn sweep_spool(spool: Arc<Spool>) {
    const MAX_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
    let mut every_hour = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        every_hour.tick().await;
        let spool = spool.clone();
        match tokio::task::spawn_blocking(move || spool.sweep(MAX_AGE)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(removed)) => tracing::info!(removed, "old spooled recordings removed"),
            Ok(Err(err)) => tracing::warn!(error = %err, "could not sweep the spool"),
            Err(err) => tracing::warn!(error = %err, "spool sweep failed"),
        }
    }
}

pub fn fetcher(config: &ProcessingConfig) -> anyhow::Result<Fetcher> {
    Fetcher::new(FetchConfig {
        max_bytes: config.max_recording_bytes,
        connect_timeout: std::time::Duration::from_millis(config.fetch_connect_timeout_ms),
        total_timeout: std::time::Duration::from_millis(config.fetch_timeout_ms),
        allow_private: config.allow_private_urls,
        extra_ca_file: config.extra_ca_file.clone(),
    })
    .context("could not set up the recording fetcher")
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
