//! Typed configuration, read from the environment (or the matching command line flags).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

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

/// How to reach PostgreSQL.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseConfig {
    /// PostgreSQL connection URL (may hold a password, so it is never logged).
    #[arg(
        long = "database-url",
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/callingest",
        hide_default_value = false,
        hide_env_values = true
    )]
    pub url: Secret,

    /// Most connections this process opens.
    #[arg(
        long = "db-max-connections",
        env = "CALLINGEST_DB_MAX_CONNECTIONS",
        default_value_t = 16
    )]
    pub max_connections: u32,

    /// How long a request waits for a database connection (a free one, or a new one while the
    /// database is unreachable) before it is answered 503.
    #[arg(
        long = "db-acquire-timeout-ms",
        env = "CALLINGEST_DB_ACQUIRE_TIMEOUT_MS",
        default_value_t = 2_000
    )]
    pub acquire_timeout_ms: u64,

    /// How long start-up keeps retrying while PostgreSQL cannot be reached (not started yet,
    /// restarting), with jittered exponential backoff; past it the process exits with an error.
    /// Meanwhile `/healthz` answers 200 and `/readyz` 503.
    #[arg(
        long = "db-connect-deadline-ms",
        env = "CALLINGEST_DB_CONNECT_DEADLINE_MS",
        default_value_t = 120_000
    )]
    pub connect_deadline_ms: u64,
}

impl DatabaseConfig {
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.acquire_timeout_ms)
    }

    pub fn connect_deadline(&self) -> Duration {
        Duration::from_millis(self.connect_deadline_ms)
    }
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

/// Everything `serve` needs.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeConfig {
    #[command(flatten)]
    pub database: DatabaseConfig,

    /// Address the HTTP server binds.
    #[arg(long, env = "CALLINGEST_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// What this process runs: the API, the workers (projectors and processing), or both.
    #[arg(long, env = "CALLINGEST_ROLE", value_enum, default_value_t = Role::All)]
    pub role: Role,

    #[command(flatten)]
    pub processing: ProcessingConfig,

    /// Bearer token of the support API under `/api/v1/admin/`; without it that API answers
    /// 403 to everyone.
    #[arg(long, env = "CALLINGEST_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,

    #[command(flatten)]
    pub http: HttpConfig,

    #[command(flatten)]
    pub replica: ReplicaConfig,
}

/// Default of `CALLINGEST_DB_READ_MAX_LAG_MS`.
pub const DEFAULT_READ_MAX_LAG_MS: u64 = 5_000;

/// An optional read replica for the listing endpoints (see README, Read replicas).
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
    /// (or not measured yet), reads go to the primary.
    #[arg(
        long = "db-read-max-lag-ms",
        env = "CALLINGEST_DB_READ_MAX_LAG_MS",
        default_value_t = DEFAULT_READ_MAX_LAG_MS
    )]
    pub read_max_lag_ms: u64,
}

impl ReplicaConfig {
    pub fn max_lag(&self) -> Duration {
        Duration::from_millis(self.read_max_lag_ms)
    }
}

impl Default for ReplicaConfig {
    /// No replica.
    fn default() -> Self {
        Self {
            read_url: None,
            read_max_lag_ms: DEFAULT_READ_MAX_LAG_MS,
        }
    }
}

/// How the HTTP API protects itself: who may speak for clients, and how much request
/// validation may run at once.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpConfig {
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

impl Default for HttpConfig {
    fn default() -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            http: HttpConfig,
        }
        // The defaults declared above; `CALLINGEST_*` variables apply, as they do for `serve`.
        Defaults::parse_from(["callingest"]).http
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

/// How accepted calls are processed.
#[derive(Debug, Clone, clap::Args)]
pub struct ProcessingConfig {
    /// Calls processed at the same time by this process.
    #[arg(long, env = "CALLINGEST_WORKER_CONCURRENCY", default_value_t = 4)]
    pub worker_concurrency: usize,

    /// How long a claimed job (fetch, transcription or callback) stays with its worker without
    /// a heartbeat. The worker renews it every third of this while the job runs, so a worker
    /// that dies loses its jobs to another within this time, however long they are.
    #[arg(long, env = "CALLINGEST_LEASE_MS", default_value_t = 30_000)]
    pub lease_ms: u64,

    /// On SIGTERM / Ctrl-C, how long jobs in flight may run on; the rest are then interrupted
    /// (their attempt does not count) and left to other instances at once.
    #[arg(long, env = "CALLINGEST_SHUTDOWN_GRACE_MS", default_value_t = 20_000)]
    pub shutdown_grace_ms: u64,

    /// Longest a fetch + analysis step may run before it is cancelled as a failed attempt
    /// (default: the fetch timeout plus 10 minutes for the analysis).
    #[arg(long, env = "CALLINGEST_FETCH_STEP_MAX_MS")]
    pub fetch_step_max_ms: Option<u64>,

    /// Largest recording fetched, in bytes.
    #[arg(long, env = "CALLINGEST_MAX_RECORDING_BYTES", default_value_t = 1 << 30)]
    pub max_recording_bytes: u64,

    /// Longest recording analysed, in minutes of decoded audio: the analysis stops once the
    /// decoded audio passes it and the call fails ("recording longer than N minutes"). Bounds
    /// the time one recording can take whatever its size or compression.
    #[arg(
        long,
        env = "CALLINGEST_MAX_RECORDING_MINUTES",
        default_value_t = 600,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub max_recording_minutes: u64,

    /// Time allowed to connect to a recording host.
    #[arg(
        long,
        env = "CALLINGEST_FETCH_CONNECT_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub fetch_connect_timeout_ms: u64,

    /// Time allowed for a whole recording download.
    #[arg(long, env = "CALLINGEST_FETCH_TIMEOUT_MS", default_value_t = 300_000)]
    pub fetch_timeout_ms: u64,

    /// Attempts to fetch a recording, the first included, when failures are transient.
    #[arg(long, env = "CALLINGEST_FETCH_MAX_ATTEMPTS", default_value_t = 5)]
    pub fetch_max_attempts: u32,

    /// Wait before fetch retry n: this × 2^(n-1) milliseconds (a longer Retry-After wins).
    #[arg(
        long,
        env = "CALLINGEST_FETCH_BACKOFF_BASE_MS",
        default_value_t = 10_000
    )]
    pub fetch_backoff_base_ms: u64,

    /// Allow partner URLs that resolve to private, loopback or link-local addresses. For tests
    /// and local development only: it opens the door to SSRF.
    #[arg(long, env = "CALLINGEST_ALLOW_PRIVATE_URLS", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_private_urls: bool,

    /// PEM file of extra CA certificates trusted for outbound HTTPS (private CAs), for
    /// recording downloads and callbacks alike.
    #[arg(long, env = "CALLINGEST_EXTRA_CA_FILE")]
    pub extra_ca_file: Option<std::path::PathBuf>,

    /// Callbacks delivered at the same time by this process.
    #[arg(long, env = "CALLINGEST_CALLBACK_CONCURRENCY", default_value_t = 4)]
    pub callback_concurrency: usize,

    /// A callback attempt succeeds on a 2xx within this time.
    #[arg(long, env = "CALLINGEST_CALLBACK_TIMEOUT_MS", default_value_t = 10_000)]
    pub callback_timeout_ms: u64,

    /// Longest a callback attempt may run before it is cancelled as a failed attempt (default:
    /// the callback timeout plus 10 seconds).
    #[arg(long, env = "CALLINGEST_CALLBACK_STEP_MAX_MS")]
    pub callback_step_max_ms: Option<u64>,

    /// Callback retry n waits this × 2^(n-1) milliseconds, ±10 % (a longer Retry-After on 429
    /// or 503 wins, up to an hour).
    #[arg(
        long,
        env = "CALLINGEST_CALLBACK_BACKOFF_BASE_MS",
        default_value_t = 30_000
    )]
    pub callback_backoff_base_ms: u64,

    #[command(flatten)]
    pub transcription: TranscriptionConfig,
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

/// How calls are transcribed.
#[derive(Debug, Clone, clap::Args)]
pub struct TranscriptionConfig {
    #[arg(long, env = "CALLINGEST_TRANSCRIBER", value_enum, default_value_t = TranscriberKind::None)]
    pub transcriber: TranscriberKind,

    /// The ggml model file of the whisper engine.
    #[arg(long, env = "CALLINGEST_WHISPER_MODEL")]
    pub whisper_model: Option<std::path::PathBuf>,

    /// CPU threads one whisper transcription uses.
    #[arg(long, env = "CALLINGEST_WHISPER_THREADS", default_value_t = 1)]
    pub whisper_threads: usize,

    /// Base URL of the OpenAI-compatible service (`{base}/v1/audio/transcriptions`).
    #[arg(long, env = "CALLINGEST_TRANSCRIBE_URL")]
    pub transcribe_url: Option<String>,

    /// Bearer token for that service.
    #[arg(long, env = "CALLINGEST_TRANSCRIBE_API_KEY", hide_env_values = true)]
    pub transcribe_api_key: Option<Secret>,

    /// The `model` the service is asked for.
    #[arg(long, env = "CALLINGEST_TRANSCRIBE_MODEL", default_value = "whisper-1")]
    pub transcribe_model: String,

    /// Longest wait for the service's answer on one stretch of speech.
    #[arg(
        long,
        env = "CALLINGEST_TRANSCRIBE_TIMEOUT_MS",
        default_value_t = 300_000
    )]
    pub transcribe_timeout_ms: u64,

    /// Calls transcribed at the same time by this process (its own pool: fetching and
    /// analysis never wait for it).
    #[arg(long, env = "CALLINGEST_TRANSCRIBE_CONCURRENCY", default_value_t = 1)]
    pub transcribe_concurrency: usize,

    /// Attempts to transcribe a call, the first included, when failures are transient; after
    /// the last the call completes without a transcript.
    #[arg(long, env = "CALLINGEST_TRANSCRIBE_MAX_ATTEMPTS", default_value_t = 3)]
    pub transcribe_max_attempts: u32,

    /// Wait before transcription retry n: this × 2^(n-1) milliseconds.
    #[arg(
        long,
        env = "CALLINGEST_TRANSCRIBE_BACKOFF_BASE_MS",
        default_value_t = 30_000
    )]
    pub transcribe_backoff_base_ms: u64,

    /// Recordings longer than this are not transcribed (the call completes without a
    /// transcript): the audio is held in memory at 16 kHz, 230 MB per channel-hour.
    #[arg(long, env = "CALLINGEST_TRANSCRIBE_MAX_MINUTES", default_value_t = 120)]
    pub transcribe_max_minutes: u64,

    /// Longest a transcription step may run before it is cancelled as a failed attempt.
    #[arg(
        long,
        env = "CALLINGEST_TRANSCRIBE_STEP_MAX_MS",
        default_value_t = 3_600_000
    )]
    pub transcribe_step_max_ms: u64,

    /// Where analysed recordings wait for transcription (default: `callingest-spool` in the
    /// system's temporary directory).
    #[arg(long, env = "CALLINGEST_SPOOL_DIR")]
    pub spool_dir: Option<std::path::PathBuf>,
}

/// Settings that existed before heartbeat leases; set, they stop the start-up rather than be
/// silently ignored.
const REMOVED_SETTINGS: [&str; 2] = ["CALLINGEST_JOB_LEASE_MS", "CALLINGEST_TRANSCRIBE_LEASE_MS"];

impl ProcessingConfig {
    /// The lease of every pool (renewed every third of it while a job runs).
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    /// Refuses settings that cannot work: the removed per-stage leases (named, with what
    /// replaces them), and a lease too short to be renewed.
    pub fn check(&self) -> anyhow::Result<()> {
        for name in REMOVED_SETTINGS {
            if std::env::var_os(name).is_some() {
                anyhow::bail!(
                    "{name} is no longer supported: leases are now short and renewed while a job \
                     runs, one setting for every pool. Unset {name} and set CALLINGEST_LEASE_MS \
                     (default 30000) if needed; the longest a step may run is \
                     CALLINGEST_FETCH_STEP_MAX_MS / CALLINGEST_TRANSCRIBE_STEP_MAX_MS / \
                     CALLINGEST_CALLBACK_STEP_MAX_MS"
                );
            }
        }
        if self.lease_ms < 1_000 {
            anyhow::bail!("CALLINGEST_LEASE_MS must be at least 1000 (it is renewed every third)");
        }
        Ok(())
    }

    pub fn fetch_pool(&self) -> PoolSettings {
        PoolSettings {
            concurrency: self.worker_concurrency.max(1),
            lease: self.lease(),
            max_step: Duration::from_millis(
                self.fetch_step_max_ms
                    .unwrap_or(self.fetch_timeout_ms + 600_000),
            ),
        }
    }

    pub fn transcription_pool(&self) -> PoolSettings {
        PoolSettings {
            concurrency: self.transcription.transcribe_concurrency.max(1),
            lease: self.lease(),
            max_step: Duration::from_millis(self.transcription.transcribe_step_max_ms),
        }
    }

    pub fn callback_pool(&self) -> PoolSettings {
        PoolSettings {
            concurrency: self.callback_concurrency.max(1),
            lease: self.lease(),
            max_step: Duration::from_millis(
                self.callback_step_max_ms
                    .unwrap_or(self.callback_timeout_ms + 10_000),
            ),
        }
    }

    pub fn max_recording_duration(&self) -> Duration {
        Duration::from_secs(self.max_recording_minutes.saturating_mul(60))
    }

    pub fn callback_settings(&self) -> crate::callbacks::CallbackSettings {
        crate::callbacks::CallbackSettings {
            timeout: Duration::from_millis(self.callback_timeout_ms),
            backoff_base_ms: self.callback_backoff_base_ms,
            allow_private: self.allow_private_urls,
            extra_ca_file: self.extra_ca_file.clone(),
        }
    }
}

impl Default for TranscriptionConfig {
    fn default() -> Self {
        ProcessingConfig::default().transcription
    }
}

impl Default for ProcessingConfig {
    fn default() -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            processing: ProcessingConfig,
        }
        // The defaults declared above; `CALLINGEST_*` variables apply, as they do for `serve`.
        Defaults::parse_from(["callingest"]).processing
    }
}
