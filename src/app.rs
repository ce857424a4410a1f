//! Building and running the service, shared by `callingest serve`, the tests and the benches.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use callingest_privacy::Privacy;
use callingest_projections::notifications::NotificationHub;
use callingest_projections::projector::EVENTS_CHANNEL;
use callingest_projections::Projector;
use sqlx::PgPool;
use tokio::task::JoinHandle;

use crate::callbacks::CallbackSender;
use crate::config::{ServeConfig, WorkersConfig};
use crate::db::replica::{Reads, Replica};
use crate::health::{Health, Liveness};
use crate::http::server::HttpServer;
use crate::http::AppState;
use crate::jobs::{Runner, Shutdown, Step};
use crate::processing::fetch::Fetcher;
use crate::processing::Worker;
use crate::transcription::spool::Spool;
use crate::transcription::TranscriptionWorker;

/// Readiness turns red when the background work has not ticked its heartbeat for this long.
const BACKGROUND_MAX_SILENCE: Duration = Duration::from_secs(30);

/// A migrated service with its listener bound and answering the probes, ready to run.
pub struct Application {
    config: ServeConfig,
    pool: PgPool,
    privacy: Privacy,
    health: Arc<Health>,
    http: HttpServer,
}

impl Application {
    /// Validates the configuration ([`ServeConfig::validate`]), binds the listen address (port
    /// 0 picks a free port: see [`Application::address`]) and answers `/healthz`, `/readyz`
    /// and `/metrics` at once, then connects to the database
    /// (creating it if needed, retrying while it cannot be reached, up to
    /// `CALLINGEST_DB_CONNECT_DEADLINE_MS`) and applies migrations. Every role listens.
    pub async fn build(config: &ServeConfig) -> anyhow::Result<Self> {
        config.validate()?;
        let background = config
            .role
            .runs_workers()
            .then(|| Liveness::new(BACKGROUND_MAX_SILENCE));
        // A malformed read URL is a configuration error: refused at once, not after the
        // primary is reached.
        let read_target = match (&config.replica.read_url, config.role.runs_api()) {
            (Some(url), true) => Some(
                crate::db::reader_target(url.expose())
                    .context("DATABASE_READ_URL is not a valid PostgreSQL URL")?,
            ),
            _ => None,
        };
        let health = Arc::new(Health::starting(background));
        let http =
            HttpServer::start(config.http.listen, health.clone(), config.role.runs_api()).await?;
        tracing::info!(address = %http.address(), role = ?config.role, "callingest listening; preparing the database");
        let database = crate::db::open(&config.database).await?;
        let pool = database.pool;
        let privacy = crate::db::open_keyring(&pool, &config.database).await?;
        // The API is mounted before readiness turns green, so a load balancer that follows
        // `/readyz` never sends a request in between.
        if config.role.runs_api() {
            let reads = match read_target {
                Some(target) => {
                    let replica = Replica::start(
                        target,
                        pool.clone(),
                        &config.database,
                        config.replica.max_lag,
                    );
                    health.database_replica(replica.clone());
                    Reads::with_replica(pool.clone(), replica)
                }
                None => Reads::primary_only(pool.clone()),
            };
            let state = AppState::new(pool.clone(), &privacy, config.http.admin_token.clone())
                .with_http_config(&config.http)
                .with_health(health.clone())
                .with_reads(reads);
            http.serve_api(Arc::new(state));
        }
        health.database_followed(database.follower);
        health.database_ready(pool.clone());
        Ok(Self {
            config: config.clone(),
            pool,
            privacy,
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

    /// The keys that seal and open personal fields (checked against the database at build).
    pub fn privacy(&self) -> &Privacy {
        &self.privacy
    }

    /// Serves until the process gets Ctrl-C / SIGTERM (or the future is dropped), then drains:
    /// the HTTP server stops accepting and finishes the requests in flight while the workers
    /// stop claiming and get `CALLINGEST_SHUTDOWN_GRACE_MS` to finish (see
    /// [`Background::drain`]).
    pub async fn run(self) -> anyhow::Result<()> {
        let background = if self.config.role.runs_workers() {
            Some(spawn_background(
                &self.pool,
                &self.privacy,
                &self.config.workers,
            )?)
        } else {
            None
        };
        // Readiness follows the background: ticked while every task of it runs.
        let _watchdog = match (&background, self.health.background()) {
            (Some(background), Some(liveness)) => {
                Some(AbortOnDrop(vec![background.watch(liveness.clone())]))
            }
            _ => None,
        };
        // Dropped (this function ends by error or is itself dropped), the background aborts
        // its tasks: everything they do is durable, and leases let others finish their jobs.
        let stop = tokio_util::sync::CancellationToken::new();
        let signal = stop.clone();
        let _signal = AbortOnDrop(vec![tokio::spawn(async move {
            shutdown_signal().await;
            signal.cancel();
        })]);
        tracing::info!(address = %self.http.address(), role = ?self.config.role, "callingest running");
        let grace = self.config.workers.jobs.shutdown_grace;
        let drained = async {
            if let Some(background) = background {
                stop.cancelled().await;
                background.drain(grace).await;
            }
        };
        let served = async {
            let served = self.http.serve_until(stop.cancelled()).await;
            // The server failing by itself ends the process too.
            stop.cancel();
            served
        };
        let (served, ()) = tokio::join!(served, drained);
        self.pool.close().await;
        tracing::info!("callingest stopped");
        served
    }
}

struct AbortOnDrop(Vec<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// How long steps interrupted at the end of the grace period get to record that they gave up
/// and release their rows.
const INTERRUPT_ALLOWANCE: std::time::Duration = std::time::Duration::from_secs(4);

/// The projectors, the worker pools and their helpers of one process. Dropped, it aborts them
/// (leases then expire); [`Background::drain`] stops them gracefully.
pub struct Background {
    /// The notification listener, the projectors, the spool sweeper, the erasure follow-up.
    services: AbortOnDrop,
    /// One task per slot of each pool.
    slots: AbortOnDrop,
    shutdown: Shutdown,
}

impl Background {
    /// Stops claiming at once; lets the steps in flight finish within `grace`; then interrupts
    /// the rest (their attempts are given back and their rows released for other instances);
    /// finally stops the projectors, whose connections (and advisory locks) close.
    pub async fn drain(mut self, grace: std::time::Duration) {
        tracing::info!(
            grace_ms = grace.as_millis() as u64,
            "draining: no more claims"
        );
        self.shutdown.stop_claiming();
        let slots = std::mem::take(&mut self.slots.0);
        let aborts: Vec<_> = slots.iter().map(|slot| slot.abort_handle()).collect();
        let mut finished = futures_util::future::join_all(slots);
        if tokio::time::timeout(grace, &mut finished).await.is_err() {
            tracing::info!("grace period over: interrupting the jobs still running");
            self.shutdown.interrupt();
            if tokio::time::timeout(INTERRUPT_ALLOWANCE, finished)
                .await
                .is_err()
            {
                tracing::warn!("jobs did not stop in time; abandoned to their leases");
                aborts.iter().for_each(|slot| slot.abort());
            }
        }
        for task in std::mem::take(&mut self.services.0) {
            task.abort();
            let _ = task.await;
        }
        tracing::info!("drained");
    }

    /// Ticks `liveness` every second while every task of the background runs (they all run
    /// until drained: one that ended has failed, and readiness turns red).
    fn watch(&self, liveness: Liveness) -> JoinHandle<()> {
        let tasks: Vec<_> = (self.services.0.iter())
            .chain(self.slots.0.iter())
            .map(JoinHandle::abort_handle)
            .collect();
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
    }

    /// For tests: the signal the pools watch.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }
}

/// Starts one projector per projection, the processing workers and the callback senders.
/// The configuration is taken as valid: [`Application::build`] validated it.
pub fn spawn_background(
    pool: &PgPool,
    privacy: &Privacy,
    config: &WorkersConfig,
) -> anyhow::Result<Background> {
    // One LISTEN connection for every projector, worker and sender of this process.
    let channels = [
        EVENTS_CHANNEL,
        crate::jobs::FETCH.channel,
        crate::jobs::CALLBACKS.channel,
    ];
    let (hub, listener) = NotificationHub::start(pool.clone(), &channels);
    let mut services = vec![listener];
    for projection in callingest_projections::all(privacy) {
        let projector = Projector::new(pool.clone(), projection);
        services.push(tokio::spawn(projector.run(hub.subscribe(EVENTS_CHANNEL))));
    }
    let shutdown = Shutdown::new();
    let start_pool = |queue, step: Arc<dyn Step>, settings: crate::jobs::PoolSettings| {
        let runner = Arc::new(Runner::new(
            pool.clone(),
            privacy,
            queue,
            step,
            settings,
            shutdown.clone(),
        ));
        (0..settings.concurrency.max(1))
            .map(|n| {
                let owner = format!("{}-{}-{n}", runner.queue().name, std::process::id());
                let wakeup = hub.subscribe(runner.queue().channel);
                tokio::spawn(runner.clone().run(owner, wakeup))
            })
            .collect::<Vec<_>>()
    };
    let fetcher = Arc::new(fetcher(config)?);
    let transcription = &config.transcription;
    let engine = crate::transcription::build_engine(transcription)?;
    let spool_dir = transcription.spool_dir();
    let spool = Arc::new(
        Spool::open(&spool_dir)
            .with_context(|| format!("could not create the spool {}", spool_dir.display()))?,
    );
    services.push(tokio::spawn(sweep_spool(spool.clone())));
    services.push(tokio::spawn(crate::erasure::follow_up::run(
        pool.clone(),
        crate::event_store::store(pool.clone(), privacy),
        spool.clone(),
        std::time::Duration::from_secs(2),
    )));
    services.push(tokio::spawn(crate::erasure::run_retention(
        pool.clone(),
        crate::event_store::store(pool.clone(), privacy),
        std::time::Duration::from_secs(600),
    )));
    let mut worker = Worker::new(pool.clone(), fetcher.clone(), config.fetch.retry())
        .with_max_recording(config.fetch.max_recording);
    if engine.is_some() {
        worker = worker.handing_over_to(spool.clone());
    }
    let mut slots = start_pool(&crate::jobs::FETCH, Arc::new(worker), config.fetch_pool());
    // Only where an engine is configured: an instance without one must not take the work of
    // those that have one (handed-over calls wait for an instance with an engine).
    if let Some(engine) = &engine {
        let worker = TranscriptionWorker::new(
            pool.clone(),
            engine.clone(),
            fetcher.clone(),
            spool.clone(),
            transcription.worker_settings(),
        );
        slots.extend(start_pool(
            &crate::jobs::TRANSCRIBE,
            Arc::new(worker),
            config.transcription_pool(),
        ));
    }
    let sender = CallbackSender::new(pool.clone(), privacy, &config.callback_settings())
        .context("could not set up the callback client")?;
    slots.extend(start_pool(
        &crate::jobs::CALLBACKS,
        Arc::new(sender),
        config.callback_pool(),
    ));
    Ok(Background {
        services: AbortOnDrop(services),
        slots: AbortOnDrop(slots),
        shutdown,
    })
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

pub fn fetcher(config: &WorkersConfig) -> anyhow::Result<Fetcher> {
    Fetcher::new(config.fetcher_settings()).context("could not set up the recording fetcher")
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
