//! Typed configuration, read from the environment (or the matching command line flags), in one
//! section per concern: `database`, `http`, `fetch`, `callbacks`, `transcription`, `jobs` and
//! `log` (plus `outbound`, the trust settings that fetch and callbacks share).
//!
//! Durations are `Duration`s, parsed from the same millisecond (or minute) variables operators
//! have always set. Each section builds the settings of the component it configures, so a
//! component's settings are assembled in one place; [`ServeConfig::validate`] checks the
//! relations between settings once, at start-up, and names the variable to change.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use callingest_domain::call::RetryPolicy;

use crate::jobs::PoolSettings;

/// A value that must never reach a log line: it prints as `[redacted]`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s))
    }
}

/// A setting that cannot work, alone or with another: the variable to change and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable} {problem}")]
pub struct ConfigError {
    /// The environment variable to change (its flag is the same name, lowercased, without
    /// the `CALLINGEST_` prefix).
    pub variable: &'static str,
    pub problem: String,
}

impl ConfigError {
    fn new(variable: &'static str, problem: impl Into<String>) -> Self {
        Self {
            variable,
            problem: problem.into(),
        }
    }
}

/// A duration given in milliseconds, as every `*_MS` variable is.
fn millis(value: &str) -> Result<Duration, String> {
    value
        .trim()
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| format!("{value:?} is not a whole number of milliseconds"))
}

/// A duration given in whole minutes.
fn minutes(value: &str) -> Result<Duration, String> {
    value
        .trim()
        .parse::<u64>()
        .map(|n| Duration::from_secs(n.saturating_mul(60)))
        .map_err(|_| format!("{value:?} is not a whole number of minutes"))
}

/// A duration given in whole minutes, at least one.
fn positive_minutes(value: &str) -> Result<Duration, String> {
    match minutes(value)? {
        Duration::ZERO => Err(format!(
            "{value:?} is not a whole number of minutes above 0"
        )),
        duration => Ok(duration),
    }
}

/// Section `database`: how to reach PostgreSQL.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseConfig {
    /// PostgreSQL connection URL (may hold a password, so it is never logged).
    #[arg(
        id = "database_url",
        value_name = "DATABASE_URL",
        long = "database-url",
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/callingest",
        hide_default_value = false,
        hide_env_values = true
    )]
    pub url: Secret,

    /// Most connections this process opens.
    #[arg(
        id = "db_max_connections",
        value_name = "DB_MAX_CONNECTIONS",
        long = "db-max-connections",
        env = "CALLINGEST_DB_MAX_CONNECTIONS",
        default_value_t = 16
    )]
    pub max_connections: u32,

    /// How long a request waits for a database connection (a free one, or a new one while the
    /// database is unreachable) before it is answered 503. In milliseconds.
    #[arg(
        id = "db_acquire_timeout_ms",
        value_name = "DB_ACQUIRE_TIMEOUT_MS",
        long = "db-acquire-timeout-ms",
        env = "CALLINGEST_DB_ACQUIRE_TIMEOUT_MS",
        default_value = "2000",
        value_parser = millis
    )]
    pub acquire_timeout: Duration,

    /// How long start-up keeps retrying while PostgreSQL cannot be reached (not started yet,
    /// restarting), with jittered exponential backoff; past it the process exits with an error.
    /// Meanwhile `/healthz` answers 200 and `/readyz` 503. In milliseconds.
    #[arg(
        id = "db_connect_deadline_ms",
        value_name = "DB_CONNECT_DEADLINE_MS",
        long = "db-connect-deadline-ms",
        env = "CALLINGEST_DB_CONNECT_DEADLINE_MS",
        default_value = "120000",
        value_parser = millis
    )]
    pub connect_deadline: Duration,

    /// The master key that wraps every call's data keys: 32 random bytes in standard base64
    /// (`openssl rand -base64 32`). Required to start: personal fields are stored sealed and
    /// cannot be written or read without it. A key other than the one the database was first
    /// started with is refused at start. Keep it out of database backups.
    #[arg(
        long = "master-key",
        env = "CALLINGEST_MASTER_KEY",
        hide = true,
        hide_env_values = true
    )]
    pub master_key: Option<Secret>,

    /// During a master-key rotation only: the master key being rotated away from (with the new
    /// one as CALLINGEST_MASTER_KEY), so rows not yet re-wrapped still open. See the README's
    /// rotation procedure. Never logged.
    #[arg(
        long = "previous-master-key",
        env = "CALLINGEST_PREVIOUS_MASTER_KEY",
        hide = true,
        hide_env_values = true
    )]
    pub previous_master_key: Option<Secret>,
}

/// Which parts of the service this process runs, so operators can scale them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Only the HTTP API.
    Api,
    /// Only the projectors and processing workers.
    Worker,
    /// Everything.
    All,
}

impl Role {
    pub fn runs_api(self) -> bool {
        matches!(self, Role::Api | Role::All)
    }

    pub fn runs_workers(self) -> bool {
        matches!(self, Role::Worker | Role::All)
    }
}

/// Everything `serve` needs, section by section.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeConfig {
    /// What this process runs: the API, the workers (projectors and processing), or both.
    #[arg(long, env = "CALLINGEST_ROLE", value_enum, default_value_t = Role::All)]
    pub role: Role,

    #[command(flatten)]
    pub database: DatabaseConfig,

    #[command(flatten)]
    pub replica: ReplicaConfig,

    #[command(flatten)]
    pub http: HttpConfig,

    #[command(flatten)]
    pub workers: WorkersConfig,
}

impl ServeConfig {
    /// Checks the relations between settings that each parse alone but cannot work together
    /// (README, "Configuration"); the error names the variable to change. Called once at
    /// start-up, before anything listens or connects.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.workers.validate()
    }
}

/// Section `replica`: an optional read replica for the listing endpoints (README, "Read
/// replicas").
#[derive(Debug, Clone, clap::Args)]
pub struct ReplicaConfig {
    /// PostgreSQL URL of a read replica (one host or libpq's list of hosts, e.g. with
    /// `target_session_attrs=prefer-standby`), serving the call list, batches, the support
    /// search and page. Unset: every read goes to `DATABASE_URL`. Never logged.
    #[arg(
        long = "database-read-url",
        env = "DATABASE_READ_URL",
        hide_env_values = true
    )]
    pub read_url: Option<Secret>,

    /// How far behind the primary the replica may be while it serves reads; further behind
    /// (or not measured yet), reads go to the primary. In milliseconds.
    #[arg(
        id = "db_read_max_lag_ms",
        value_name = "DB_READ_MAX_LAG_MS",
        long = "db-read-max-lag-ms",
        env = "CALLINGEST_DB_READ_MAX_LAG_MS",
        default_value = "5000",
        value_parser = millis
    )]
    pub max_lag: Duration,
}

impl Default for ReplicaConfig {
    /// No replica.
    fn default() -> Self {
        Self {
            read_url: None,
            max_lag: Duration::from_secs(5),
        }
    }
}

/// Section `http`: where the API listens and how it protects itself — who may speak for
/// clients, and how much request validation may run at once.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpConfig {
    /// Address the HTTP server binds.
    #[arg(long, env = "CALLINGEST_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Bearer token of the support API under `/api/v1/admin/`; without it that API answers
    /// 403 to everyone.
    #[arg(long, env = "CALLINGEST_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,

    /// Reverse proxies (addresses or CIDR ranges, comma-separated) whose `X-Forwarded-For` and
    /// `X-Forwarded-Proto` headers are believed. Empty: the peer address is the client and
    /// only a TLS connection counts as HTTPS.
    #[arg(
        long,
        env = "CALLINGEST_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_parser = parse_proxy
    )]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Ingest bodies validated at the same time by this process (on the blocking thread pool,
    /// never on the threads that serve requests). Default: the number of CPUs, at least 2.
    #[arg(long, env = "CALLINGEST_VALIDATION_CONCURRENCY")]
    pub validation_concurrency: Option<usize>,

    /// Of those, how many one partner may use at once; its further batches wait up to 2 s for
    /// their turn, then are answered 429.
    #[arg(
        long,
        env = "CALLINGEST_VALIDATION_CONCURRENCY_PER_PARTNER",
        default_value_t = 1
    )]
    pub validation_concurrency_per_partner: usize,
}

impl HttpConfig {
    /// The global bound on validations at once, the per-partner one never above it.
    pub fn validation_limits(&self) -> (usize, usize) {
        let global = self.validation_concurrency.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(2)
                .max(2)
        });
        let global = global.max(1);
        (
            global,
            self.validation_concurrency_per_partner.clamp(1, global),
        )
    }
}

/// A proxy address (`10.0.0.7`) or range (`10.0.0.0/24`).
fn parse_proxy(value: &str) -> Result<ipnet::IpNet, String> {
    let value = value.trim();
    value
        .parse::<ipnet::IpNet>()
        .or_else(|_| value.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{value:?} is not an IP address or CIDR range"))
}

/// The background work of one process: the job runner and the settings of its three pools.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkersConfig {
    #[command(flatten)]
    pub jobs: JobsConfig,

    #[command(flatten)]
    pub fetch: FetchConfig,

    #[command(flatten)]
    pub callbacks: CallbacksConfig,

    #[command(flatten)]
    pub transcription: TranscriptionConfig,

    #[command(flatten)]
    pub outbound: OutboundConfig,
}

impl WorkersConfig {
    /// See [`ServeConfig::validate`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.jobs.validate()?;
        self.fetch.validate()?;
        self.callbacks.validate()?;
        self.transcription.validate()
    }

    pub fn fetch_pool(&self) -> PoolSettings {
        self.fetch.pool(&self.jobs)
    }

    pub fn callback_pool(&self) -> PoolSettings {
        self.callbacks.pool(&self.jobs)
    }

    pub fn transcription_pool(&self) -> PoolSettings {
        self.transcription.pool(&self.jobs)
    }

    pub fn fetcher_settings(&self) -> crate::processing::fetch::FetchSettings {
        self.fetch.fetcher_settings(&self.outbound)
    }

    pub fn callback_settings(&self) -> crate::callbacks::CallbackSettings {
        self.callbacks.sender_settings(&self.outbound)
    }
}

/// Settings that existed before heartbeat leases; set, they stop the start-up rather than be
/// silently ignored.
const REMOVED_SETTINGS: [&str; 2] = ["CALLINGEST_JOB_LEASE_MS", "CALLINGEST_TRANSCRIBE_LEASE_MS"];

/// The shortest lease: it is renewed every third, and a renewal is a database round trip.
const MIN_LEASE: Duration = Duration::from_secs(1);

/// Section `jobs`: what every pool of the job runner shares.
#[derive(Debug, Clone, clap::Args)]
pub struct JobsConfig {
    /// How long a claimed job (fetch, transcription or callback) stays with its worker without
    /// a heartbeat, in milliseconds. The worker renews it every third of this while the job
    /// runs, so a worker that dies loses its jobs to another within this time, however long
    /// they are.
    #[arg(
        id = "lease_ms",
        value_name = "LEASE_MS",
        long = "lease-ms",
        env = "CALLINGEST_LEASE_MS",
        default_value = "30000",
        value_parser = millis
    )]
    pub lease: Duration,

    /// On SIGTERM / Ctrl-C, how long jobs in flight may run on, in milliseconds; the rest are
    /// then interrupted (their attempt does not count) and left to other instances at once.
    #[arg(
        id = "shutdown_grace_ms",
        value_name = "SHUTDOWN_GRACE_MS",
        long = "shutdown-grace-ms",
        env = "CALLINGEST_SHUTDOWN_GRACE_MS",
        default_value = "20000",
        value_parser = millis
    )]
    pub shutdown_grace: Duration,
}

impl JobsConfig {
    /// Refuses the removed per-stage leases (named, with what replaces them) and a lease too
    /// short to be renewed.
    fn validate(&self) -> Result<(), ConfigError> {
        for name in REMOVED_SETTINGS {
            if std::env::var_os(name).is_some() {
                return Err(ConfigError::new(
                    name,
                    format!(
                        "is no longer supported: leases are now short and renewed while a job \
                         runs, one setting for every pool. Unset {name} and set \
                         CALLINGEST_LEASE_MS (default 30000) if needed; the longest a step may \
                         run is CALLINGEST_FETCH_STEP_MAX_MS / CALLINGEST_TRANSCRIBE_STEP_MAX_MS \
                         / CALLINGEST_CALLBACK_STEP_MAX_MS"
                    ),
                ));
            }
        }
        if self.lease < MIN_LEASE {
            return Err(ConfigError::new(
                "CALLINGEST_LEASE_MS",
                "must be at least 1000 (it is renewed every third)",
            ));
        }
        Ok(())
    }

    /// A pool of `concurrency` slots (at least one) whose steps run at most `max_step`.
    fn pool(&self, concurrency: usize, max_step: Duration) -> PoolSettings {
        PoolSettings {
            concurrency: concurrency.max(1),
            lease: self.lease,
            max_step,
        }
    }
}

/// `step_max`, when set, must leave the step its whole `timeout`, or every slow but healthy
/// attempt would be cancelled as a failure before its own timeout could end it.
fn exceeds(
    step_max: Option<Duration>,
    step_variable: &'static str,
    timeout: Duration,
    timeout_variable: &str,
) -> Result<(), ConfigError> {
    match step_max {
        Some(step_max) if step_max <= timeout => Err(ConfigError::new(
            step_variable,
            format!(
                "({} ms) must exceed {timeout_variable} ({} ms)",
                step_max.as_millis(),
                timeout.as_millis()
            ),
        )),
        _ => Ok(()),
    }
}

/// Section `fetch`: downloading and analysing recordings.
#[derive(Debug, Clone, clap::Args)]
pub struct FetchConfig {
    /// Calls fetched and analysed at the same time by this process.
    #[arg(
        id = "worker_concurrency",
        value_name = "WORKER_CONCURRENCY",
        long = "worker-concurrency",
        env = "CALLINGEST_WORKER_CONCURRENCY",
        default_value_t = 4
    )]
    pub concurrency: usize,

    /// Longest a fetch + analysis step may run before it is cancelled as a failed attempt, in
    /// milliseconds; must exceed the fetch timeout (default: the fetch timeout plus 10 minutes
    /// for the analysis).
    #[arg(
        id = "fetch_step_max_ms",
        value_name = "FETCH_STEP_MAX_MS",
        long = "fetch-step-max-ms",
        env = "CALLINGEST_FETCH_STEP_MAX_MS",
        value_parser = millis
    )]
    pub step_max: Option<Duration>,

    /// Largest recording fetched, in bytes.
    #[arg(long, env = "CALLINGEST_MAX_RECORDING_BYTES", default_value_t = 1 << 30)]
    pub max_recording_bytes: u64,

    /// Longest recording analysed, in minutes of decoded audio: the analysis stops once the
    /// decoded audio passes it and the call fails ("recording longer than N minutes"). Bounds
    /// the time one recording can take whatever its size or compression.
    #[arg(
        id = "max_recording_minutes",
        value_name = "MAX_RECORDING_MINUTES",
        long = "max-recording-minutes",
        env = "CALLINGEST_MAX_RECORDING_MINUTES",
        default_value = "600",
        value_parser = positive_minutes
    )]
    pub max_recording: Duration,

    /// Time allowed to connect to a recording host, in milliseconds.
    #[arg(
        id = "fetch_connect_timeout_ms",
        value_name = "FETCH_CONNECT_TIMEOUT_MS",
        long = "fetch-connect-timeout-ms",
        env = "CALLINGEST_FETCH_CONNECT_TIMEOUT_MS",
        default_value = "10000",
        value_parser = millis
    )]
    pub connect_timeout: Duration,

    /// Time allowed for a whole recording download, in milliseconds.
    #[arg(
        id = "fetch_timeout_ms",
        value_name = "FETCH_TIMEOUT_MS",
        long = "fetch-timeout-ms",
        env = "CALLINGEST_FETCH_TIMEOUT_MS",
        default_value = "300000",
        value_parser = millis
    )]
    pub timeout: Duration,

    /// Attempts to fetch a recording, the first included, when failures are transient.
    #[arg(
        id = "fetch_max_attempts",
        value_name = "FETCH_MAX_ATTEMPTS",
        long = "fetch-max-attempts",
        env = "CALLINGEST_FETCH_MAX_ATTEMPTS",
        default_value_t = 5
    )]
    pub max_attempts: u32,

    /// Wait before fetch retry n: this × 2^(n-1) milliseconds (a longer Retry-After wins).
    #[arg(
        id = "fetch_backoff_base_ms",
        value_name = "FETCH_BACKOFF_BASE_MS",
        long = "fetch-backoff-base-ms",
        env = "CALLINGEST_FETCH_BACKOFF_BASE_MS",
        default_value = "10000",
        value_parser = millis
    )]
    pub backoff_base: Duration,
}

/// What a fetch step may take beyond the download when no maximum is set: the analysis.
const ANALYSIS_ALLOWANCE: Duration = Duration::from_secs(600);

impl FetchConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        exceeds(
            self.step_max,
            "CALLINGEST_FETCH_STEP_MAX_MS",
            self.timeout,
            "CALLINGEST_FETCH_TIMEOUT_MS",
        )
    }

    pub fn pool(&self, jobs: &JobsConfig) -> PoolSettings {
        let max_step = self.step_max.unwrap_or(self.timeout + ANALYSIS_ALLOWANCE);
        jobs.pool(self.concurrency, max_step)
    }

    pub fn retry(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts,
            backoff_base_ms: whole_millis(self.backoff_base),
        }
    }

    pub fn fetcher_settings(
        &self,
        outbound: &OutboundConfig,
    ) -> crate::processing::fetch::FetchSettings {
        crate::processing::fetch::FetchSettings {
            max_bytes: self.max_recording_bytes,
            connect_timeout: self.connect_timeout,
            total_timeout: self.timeout,
            allow_private: outbound.allow_private_urls,
            extra_ca_file: outbound.extra_ca_file.clone(),
        }
    }
}

fn whole_millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Section `outbound`: what recording downloads and callbacks trust alike.
#[derive(Debug, Clone, clap::Args)]
pub struct OutboundConfig {
    /// Allow partner URLs that resolve to private, loopback or link-local addresses. For tests
    /// and local development only: it opens the door to SSRF.
    #[arg(long, env = "CALLINGEST_ALLOW_PRIVATE_URLS", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_private_urls: bool,

    /// PEM file of extra CA certificates trusted for outbound HTTPS (private CAs), for
    /// recording downloads and callbacks alike.
    #[arg(long, env = "CALLINGEST_EXTRA_CA_FILE")]
    pub extra_ca_file: Option<PathBuf>,
}

/// Section `callbacks`: delivering outcomes to partners.
#[derive(Debug, Clone, clap::Args)]
pub struct CallbacksConfig {
    /// Callbacks delivered at the same time by this process.
    #[arg(
        id = "callback_concurrency",
        value_name = "CALLBACK_CONCURRENCY",
        long = "callback-concurrency",
        env = "CALLINGEST_CALLBACK_CONCURRENCY",
        default_value_t = 4
    )]
    pub concurrency: usize,

    /// A callback attempt succeeds on a 2xx within this time, in milliseconds.
    #[arg(
        id = "callback_timeout_ms",
        value_name = "CALLBACK_TIMEOUT_MS",
        long = "callback-timeout-ms",
        env = "CALLINGEST_CALLBACK_TIMEOUT_MS",
        default_value = "10000",
        value_parser = millis
    )]
    pub timeout: Duration,

    /// Longest a callback attempt may run before it is cancelled as a failed attempt, in
    /// milliseconds; must exceed the callback timeout (default: the callback timeout plus 10
    /// seconds).
    #[arg(
        id = "callback_step_max_ms",
        value_name = "CALLBACK_STEP_MAX_MS",
        long = "callback-step-max-ms",
        env = "CALLINGEST_CALLBACK_STEP_MAX_MS",
        value_parser = millis
    )]
    pub step_max: Option<Duration>,

    /// Callback retry n waits this × 2^(n-1) milliseconds, ±10 % (a longer Retry-After on 429
    /// or 503 wins, up to an hour).
    #[arg(
        id = "callback_backoff_base_ms",
        value_name = "CALLBACK_BACKOFF_BASE_MS",
        long = "callback-backoff-base-ms",
        env = "CALLINGEST_CALLBACK_BACKOFF_BASE_MS",
        default_value = "30000",
        value_parser = millis
    )]
    pub backoff_base: Duration,
}

/// What a callback step may take beyond its request when no maximum is set: recording it.
const CALLBACK_ALLOWANCE: Duration = Duration::from_secs(10);

impl CallbacksConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        exceeds(
            self.step_max,
            "CALLINGEST_CALLBACK_STEP_MAX_MS",
            self.timeout,
            "CALLINGEST_CALLBACK_TIMEOUT_MS",
        )
    }

    pub fn pool(&self, jobs: &JobsConfig) -> PoolSettings {
        let max_step = self.step_max.unwrap_or(self.timeout + CALLBACK_ALLOWANCE);
        jobs.pool(self.concurrency, max_step)
    }

    pub fn sender_settings(&self, outbound: &OutboundConfig) -> crate::callbacks::CallbackSettings {
        crate::callbacks::CallbackSettings {
            timeout: self.timeout,
            backoff_base_ms: whole_millis(self.backoff_base),
            allow_private: outbound.allow_private_urls,
            extra_ca_file: outbound.extra_ca_file.clone(),
        }
    }
}

/// Which speech-to-text engine transcribes calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TranscriberKind {
    /// No transcripts: calls complete after the analysis (`transcription_available: false`).
    None,
    /// Whisper in-process (whisper.cpp), from the ggml file `CALLINGEST_WHISPER_MODEL`; needs a
    /// build with `--features whisper`.
    Whisper,
    /// An OpenAI-compatible service at `CALLINGEST_TRANSCRIBE_URL`.
    Openai,
}

/// Section `transcription`: how calls are transcribed.
#[derive(Debug, Clone, clap::Args)]
pub struct TranscriptionConfig {
    #[arg(long, env = "CALLINGEST_TRANSCRIBER", value_enum, default_value_t = TranscriberKind::None)]
    pub transcriber: TranscriberKind,

    /// The ggml model file of the whisper engine.
    #[arg(long, env = "CALLINGEST_WHISPER_MODEL")]
    pub whisper_model: Option<PathBuf>,

    /// CPU threads one whisper transcription uses.
    #[arg(long, env = "CALLINGEST_WHISPER_THREADS", default_value_t = 1)]
    pub whisper_threads: usize,

    /// Base URL of the OpenAI-compatible service (`{base}/v1/audio/transcriptions`).
    #[arg(
        id = "transcribe_url",
        value_name = "TRANSCRIBE_URL",
        long = "transcribe-url",
        env = "CALLINGEST_TRANSCRIBE_URL"
    )]
    pub url: Option<String>,

    /// Bearer token for that service.
    #[arg(
        id = "transcribe_api_key",
        value_name = "TRANSCRIBE_API_KEY",
        long = "transcribe-api-key",
        env = "CALLINGEST_TRANSCRIBE_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<Secret>,

    /// The `model` the service is asked for.
    #[arg(
        id = "transcribe_model",
        value_name = "TRANSCRIBE_MODEL",
        long = "transcribe-model",
        env = "CALLINGEST_TRANSCRIBE_MODEL",
        default_value = "whisper-1"
    )]
    pub model: String,

    /// Longest wait for the service's answer on one stretch of speech, in milliseconds.
    #[arg(
        id = "transcribe_timeout_ms",
        value_name = "TRANSCRIBE_TIMEOUT_MS",
        long = "transcribe-timeout-ms",
        env = "CALLINGEST_TRANSCRIBE_TIMEOUT_MS",
        default_value = "300000",
        value_parser = millis
    )]
    pub timeout: Duration,

    /// Calls transcribed at the same time by this process (its own pool: fetching and
    /// analysis never wait for it).
    #[arg(
        id = "transcribe_concurrency",
        value_name = "TRANSCRIBE_CONCURRENCY",
        long = "transcribe-concurrency",
        env = "CALLINGEST_TRANSCRIBE_CONCURRENCY",
        default_value_t = 1
    )]
    pub concurrency: usize,

    /// Attempts to transcribe a call, the first included, when failures are transient; after
    /// the last the call completes without a transcript.
    #[arg(
        id = "transcribe_max_attempts",
        value_name = "TRANSCRIBE_MAX_ATTEMPTS",
        long = "transcribe-max-attempts",
        env = "CALLINGEST_TRANSCRIBE_MAX_ATTEMPTS",
        default_value_t = 3
    )]
    pub max_attempts: u32,

    /// Wait before transcription retry n: this × 2^(n-1) milliseconds.
    #[arg(
        id = "transcribe_backoff_base_ms",
        value_name = "TRANSCRIBE_BACKOFF_BASE_MS",
        long = "transcribe-backoff-base-ms",
        env = "CALLINGEST_TRANSCRIBE_BACKOFF_BASE_MS",
        default_value = "30000",
        value_parser = millis
    )]
    pub backoff_base: Duration,

    /// Recordings longer than this many minutes are not transcribed (the call completes
    /// without a transcript). Memory does not depend on it (recordings are streamed through the
    /// engine); it bounds the CPU one call can take. The default is the analysis limit's, so
    /// every call analysed can be transcribed.
    #[arg(
        id = "transcribe_max_minutes",
        value_name = "TRANSCRIBE_MAX_MINUTES",
        long = "transcribe-max-minutes",
        env = "CALLINGEST_TRANSCRIBE_MAX_MINUTES",
        default_value = "600",
        value_parser = minutes
    )]
    pub max_duration: Duration,

    /// Longest a transcription step may run before it is cancelled as a failed attempt, in
    /// milliseconds; with the openai engine it must exceed the transcribe timeout.
    #[arg(
        id = "transcribe_step_max_ms",
        value_name = "TRANSCRIBE_STEP_MAX_MS",
        long = "transcribe-step-max-ms",
        env = "CALLINGEST_TRANSCRIBE_STEP_MAX_MS",
        default_value = "3600000",
        value_parser = millis
    )]
    pub step_max: Duration,

    /// Where analysed recordings wait for transcription (default: `callingest-spool` in the
    /// system's temporary directory).
    #[arg(long, env = "CALLINGEST_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
}

impl TranscriptionConfig {
    /// The engine chosen must have what it needs; a request to the service must be able to
    /// end by its own timeout within the step.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.transcriber {
            TranscriberKind::None => Ok(()),
            TranscriberKind::Whisper if self.whisper_model.is_none() => Err(ConfigError::new(
                "CALLINGEST_WHISPER_MODEL",
                "must name a ggml model file when CALLINGEST_TRANSCRIBER=whisper \
                 (scripts/fetch-whisper-model writes one)",
            )),
            TranscriberKind::Whisper => Ok(()),
            TranscriberKind::Openai if self.url.is_none() => Err(ConfigError::new(
                "CALLINGEST_TRANSCRIBE_URL",
                "must be set when CALLINGEST_TRANSCRIBER=openai",
            )),
            TranscriberKind::Openai => exceeds(
                Some(self.step_max),
                "CALLINGEST_TRANSCRIBE_STEP_MAX_MS",
                self.timeout,
                "CALLINGEST_TRANSCRIBE_TIMEOUT_MS",
            ),
        }
    }

    pub fn pool(&self, jobs: &JobsConfig) -> PoolSettings {
        jobs.pool(self.concurrency, self.step_max)
    }

    pub fn worker_settings(&self) -> crate::transcription::TranscriptionWorkerSettings {
        crate::transcription::TranscriptionWorkerSettings {
            retry: RetryPolicy {
                max_attempts: self.max_attempts,
                backoff_base_ms: whole_millis(self.backoff_base),
            },
            max_duration: self.max_duration,
        }
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.spool_dir
            .clone()
            .unwrap_or_else(crate::transcription::spool::Spool::default_dir)
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Section `log`: what is logged and how (every command; logs go to stderr).
#[derive(Debug, Clone, clap::Args)]
pub struct LogConfig {
    /// Log filter, in tracing's `EnvFilter` syntax.
    #[arg(
        id = "log",
        value_name = "LOG",
        long = "log",
        env = "CALLINGEST_LOG",
        default_value = "info,sqlx=warn",
        global = true
    )]
    pub filter: String,

    /// `text`, or `json` for one JSON object per line.
    #[arg(
        id = "log_format",
        value_name = "LOG_FORMAT",
        long = "log-format",
        env = "CALLINGEST_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text,
        global = true
    )]
    pub format: LogFormat,
}

impl LogConfig {
    /// The filter, refused with the variable's name when it does not parse (it used to fall
    /// back to the default silently, hiding a typo).
    pub fn env_filter(&self) -> Result<tracing_subscriber::EnvFilter, ConfigError> {
        tracing_subscriber::EnvFilter::try_new(&self.filter)
            .map_err(|err| ConfigError::new("CALLINGEST_LOG", format!("is not a filter: {err}")))
    }
}

/// The defaults declared on a section's fields, as `serve` would see them: `CALLINGEST_*`
/// variables apply.
macro_rules! defaults_from_environment {
    ($($section:ty),*) => {$(
        impl Default for $section {
            fn default() -> Self {
                use clap::Parser;
                #[derive(Parser)]
                struct Defaults {
                    #[command(flatten)]
                    section: $section,
                }
                Defaults::parse_from(["callingest"]).section
            }
        }
    )*};
}

defaults_from_environment!(
    HttpConfig,
    WorkersConfig,
    JobsConfig,
    FetchConfig,
    OutboundConfig,
    CallbacksConfig,
    TranscriptionConfig,
    LogConfig
);

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        config: ServeConfig,
    }

    /// `serve` with these flags and the defaults otherwise (flags, not variables: tests share
    /// one process environment).
    fn serve(flags: &[&str]) -> ServeConfig {
        let args = ["callingest"].iter().chain(flags);
        Serve::try_parse_from(args).unwrap().config
    }

    fn refused(flags: &[&str]) -> ConfigError {
        serve(flags).validate().unwrap_err()
    }

    #[test]
    fn the_defaults_are_valid() {
        serve(&[]).validate().unwrap();
    }

    #[test]
    fn millisecond_variables_become_durations() {
        let config = serve(&[
            "--lease-ms",
            "1500",
            "--fetch-timeout-ms",
            "2000",
            "--max-recording-minutes",
            "2",
        ]);
        assert_eq!(config.workers.jobs.lease, Duration::from_millis(1_500));
        assert_eq!(config.workers.fetch.timeout, Duration::from_secs(2));
        assert_eq!(config.workers.fetch.max_recording, Duration::from_secs(120));
        // The default step maximum follows the fetch timeout.
        assert_eq!(
            config.workers.fetch_pool().max_step,
            Duration::from_secs(2) + ANALYSIS_ALLOWANCE
        );
    }

    #[test]
    fn a_duration_that_is_not_a_number_is_refused_by_the_parser() {
        let Err(err) = Serve::try_parse_from(["callingest", "--lease-ms", "30s"]) else {
            panic!("30s is not milliseconds");
        };
        assert!(err
            .to_string()
            .contains("\"30s\" is not a whole number of milliseconds"));
        assert!(Serve::try_parse_from(["callingest", "--max-recording-minutes", "0"]).is_err());
        // 0 was always accepted here (no call is transcribed), and still is.
        let none = Serve::try_parse_from(["callingest", "--transcribe-max-minutes", "0"]).unwrap();
        assert_eq!(
            none.config.workers.transcription.max_duration,
            Duration::ZERO
        );
    }

    #[test]
    fn a_lease_too_short_to_renew_names_its_variable() {
        let err = refused(&["--lease-ms", "999"]);
        assert_eq!(err.variable, "CALLINGEST_LEASE_MS");
        assert!(err
            .to_string()
            .starts_with("CALLINGEST_LEASE_MS must be at least 1000"));
    }

    #[test]
    fn a_fetch_step_maximum_must_exceed_the_fetch_timeout() {
        let err = refused(&[
            "--fetch-timeout-ms",
            "60000",
            "--fetch-step-max-ms",
            "60000",
        ]);
        assert_eq!(err.variable, "CALLINGEST_FETCH_STEP_MAX_MS");
        assert_eq!(
            err.to_string(),
            "CALLINGEST_FETCH_STEP_MAX_MS (60000 ms) must exceed CALLINGEST_FETCH_TIMEOUT_MS \
             (60000 ms)"
        );
        serve(&[
            "--fetch-timeout-ms",
            "60000",
            "--fetch-step-max-ms",
            "60001",
        ])
        .validate()
        .unwrap();
    }

    #[test]
    fn a_callback_step_maximum_must_exceed_the_callback_timeout() {
        let err = refused(&["--callback-step-max-ms", "5000"]);
        assert_eq!(err.variable, "CALLINGEST_CALLBACK_STEP_MAX_MS");
        assert!(err
            .to_string()
            .contains("CALLINGEST_CALLBACK_TIMEOUT_MS (10000 ms)"));
    }

    #[test]
    fn each_engine_needs_its_own_settings() {
        // CALLINGEST_WHISPER_MODEL may be set where the tests run: the field is cleared.
        let mut whisper = serve(&["--transcriber", "whisper"]);
        whisper.workers.transcription.whisper_model = None;
        let err = whisper.validate().unwrap_err();
        assert_eq!(err.variable, "CALLINGEST_WHISPER_MODEL");
        let err = refused(&["--transcriber", "openai"]);
        assert_eq!(err.variable, "CALLINGEST_TRANSCRIBE_URL");
        let openai = [
            "--transcriber",
            "openai",
            "--transcribe-url",
            "http://127.0.0.1:9",
        ];
        let err = refused(&[&openai[..], &["--transcribe-step-max-ms", "300000"]].concat());
        assert_eq!(err.variable, "CALLINGEST_TRANSCRIBE_STEP_MAX_MS");
        serve(&openai).validate().unwrap();
        // Whisper has no request timeout: a short step is the operator's choice.
        serve(&[
            "--transcriber",
            "whisper",
            "--whisper-model",
            "model.bin",
            "--transcribe-step-max-ms",
            "60000",
        ])
        .validate()
        .unwrap();
    }

    #[test]
    fn every_variable_an_error_names_is_one_serve_reads() {
        use clap::CommandFactory;
        let command = Serve::command();
        let read: Vec<String> = command
            .get_arguments()
            .filter_map(|arg| arg.get_env())
            .map(|env| env.to_string_lossy().into_owned())
            .collect();
        for named in [
            "CALLINGEST_LEASE_MS",
            "CALLINGEST_FETCH_STEP_MAX_MS",
            "CALLINGEST_FETCH_TIMEOUT_MS",
            "CALLINGEST_CALLBACK_STEP_MAX_MS",
            "CALLINGEST_CALLBACK_TIMEOUT_MS",
            "CALLINGEST_TRANSCRIBE_STEP_MAX_MS",
            "CALLINGEST_TRANSCRIBE_TIMEOUT_MS",
            "CALLINGEST_TRANSCRIBE_URL",
            "CALLINGEST_WHISPER_MODEL",
        ] {
            assert!(read.iter().any(|env| env == named), "{named} is not read");
        }
    }

    #[test]
    fn a_log_filter_that_does_not_parse_names_its_variable() {
        let log = LogConfig {
            filter: "info,sqlx=loud".into(),
            format: LogFormat::Text,
        };
        assert_eq!(log.env_filter().unwrap_err().variable, "CALLINGEST_LOG");
        let log = LogConfig {
            filter: "info,sqlx=warn".into(),
            ..log
        };
        log.env_filter().unwrap();
    }
}
