//! [`TestApp`]: the service in this process on a fresh database, bound to a free loopback
//! port, with one partner; built by [`TestApp::builder`].

use std::time::Duration;

use callingest::app::Application;
use callingest::config::{
    CallbacksConfig, DatabaseConfig, FetchConfig, HttpConfig, JobsConfig, OutboundConfig,
    ReplicaConfig, Role, Secret, ServeConfig, TranscriptionConfig, WorkersConfig,
};
use callingest::partners::{create_partner, PartnerCredentials};
use callingest_privacy::{MasterKey, Privacy};
use sqlx::PgPool;

use super::database::{server_url, TestDatabase};

/// The admin token every test app is configured with.
pub const ADMIN_TOKEN: &str = "test-admin-token";
/// The master key of every test service and CLI run (32 bytes of base64; tests only).
pub const TEST_MASTER_KEY: &str = "dGVzdCBtYXN0ZXIga2V5IG9mIGNhbGxpbmdlc3QhISE=";
/// The partner every test app creates, answering to [`TestApp::partner`].
pub const PARTNER_ID: &str = "partner-a";

/// The keys of [`TEST_MASTER_KEY`].
pub fn test_privacy() -> Privacy {
    Privacy::new(&MasterKey::from_base64(TEST_MASTER_KEY).expect("a valid key"))
}

/// Worker settings for tests: loopback servers allowed, short timeouts and backoff so
/// retries happen within a test. The default of [`TestAppBuilder::workers`].
pub fn test_workers() -> WorkersConfig {
    WorkersConfig {
        jobs: JobsConfig {
            lease: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(20),
        },
        fetch: FetchConfig {
            concurrency: 2,
            step_max: None,
            max_recording_bytes: 1 << 30,
            max_recording: Duration::from_secs(600 * 60),
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
            max_attempts: 3,
            backoff_base: Duration::from_millis(100),
        },
        callbacks: CallbacksConfig {
            concurrency: 2,
            timeout: Duration::from_secs(2),
            step_max: None,
            backoff_base: Duration::from_millis(200),
        },
        transcription: Default::default(),
        outbound: OutboundConfig {
            allow_private_urls: true,
            extra_ca_file: None,
        },
    }
}

/// The service of one test. Its database is dropped with it.
pub struct TestApp {
    pub address: String,
    pub pool: PgPool,
    pub client: reqwest::Client,
    pub partner: PartnerCredentials,
    /// The service's keys (from [`TEST_MASTER_KEY`]), for tests that run projectors by hand.
    pub privacy: Privacy,
    pub(super) config: ServeConfig,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// Held so the database lives exactly as long as the app (dropped with it).
    _database: TestDatabase,
}

/// How to start a [`TestApp`]. Each setting has the default most tests want:
///
/// | setting | default |
/// |---|---|
/// | [`role`](Self::role) | [`Role::Api`]: nothing is processed, a test sees exactly what ingest wrote |
/// | [`rate_limit`](Self::rate_limit) | 600 requests a minute for the partner |
/// | [`workers`](Self::workers) | [`test_workers`] |
/// | [`transcriber`](Self::transcriber) | none (the service's default) |
/// | [`http`](Self::http) | the service's defaults (listen address and admin token are the test's) |
/// | [`server_url`](Self::server_url) | `DATABASE_URL` |
/// | [`read_from_itself`](Self::read_from_itself) | off: no replica |
#[must_use]
pub struct TestAppBuilder {
    role: Role,
    rate_limit_per_minute: u32,
    workers: WorkersConfig,
    http: HttpConfig,
    server_url: String,
    read_from_itself: bool,
}

impl TestApp {
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            role: Role::Api,
            rate_limit_per_minute: 600,
            workers: test_workers(),
            http: HttpConfig::default(),
            server_url: server_url(),
            read_from_itself: false,
        }
    }

    /// The API alone with every default: `TestApp::builder().spawn()`.
    pub async fn spawn() -> TestApp {
        Self::builder().spawn().await
    }

    /// API, projectors and workers in one service with [`test_workers`]:
    /// `TestApp::builder().role(Role::All).spawn()`.
    pub async fn spawn_processing() -> TestApp {
        Self::builder().role(Role::All).spawn().await
    }
}

impl TestAppBuilder {
    /// What the service runs: [`Role::All`] to have calls processed and called back.
    pub fn role(mut self, role: Role) -> Self {
        self.role = role;
        self
    }

    /// Requests a minute the partner may make.
    pub fn rate_limit(mut self, per_minute: u32) -> Self {
        self.rate_limit_per_minute = per_minute;
        self
    }

    /// Settings of the fetch, transcription and callback workers (start from [`test_workers`]).
    pub fn workers(mut self, workers: WorkersConfig) -> Self {
        self.workers = workers;
        self
    }

    /// The transcription settings of the workers (the rest of [`Self::workers`] is kept).
    pub fn transcriber(mut self, transcription: TranscriptionConfig) -> Self {
        self.workers.transcription = transcription;
        self
    }

    /// HTTP settings (trusted proxies, validation bounds, support sign-in...). The listen
    /// address and the admin token are always the test's.
    pub fn http(mut self, http: HttpConfig) -> Self {
        self.http = http;
        self
    }

    /// The PostgreSQL server to create the app's database on (a cluster of the test's own).
    pub fn server_url(mut self, server_url: &str) -> Self {
        self.server_url = server_url.to_owned();
        self
    }

    /// The service's `DATABASE_READ_URL` is its own database: the read endpoints go through the
    /// replica path (lag measured, fallbacks) on the one server.
    pub fn read_from_itself(mut self) -> Self {
        self.read_from_itself = true;
        self
    }

    /// Creates the database, starts the service on 127.0.0.1 and creates the partner.
    pub async fn spawn(self) -> TestApp {
        // Quiet unless asked: `TEST_LOG=1 cargo test ...` shows the service's logs.
        if std::env::var_os("TEST_LOG").is_some() {
            callingest::telemetry::init_logging(&Default::default())
                .expect("CALLINGEST_LOG parses");
        }
        let database = TestDatabase::create_on(&self.server_url).await;
        let config = ServeConfig {
            database: DatabaseConfig {
                url: Secret::new(database.url.clone()),
                max_connections: 10,
                acquire_timeout: Duration::from_secs(2),
                connect_deadline: Duration::from_secs(120),
                master_key: Some(Secret::new(TEST_MASTER_KEY)),
                previous_master_key: None,
            },
            role: self.role,
            http: HttpConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                admin_token: Some(Secret::new(ADMIN_TOKEN)),
                ..self.http
            },
            workers: self.workers,
            replica: ReplicaConfig {
                read_url: self
                    .read_from_itself
                    .then(|| Secret::new(database.url.clone())),
                ..Default::default()
            },
        };
        let (address, pool, server) = start(&config).await;
        let partner = create_partner(
            &pool,
            PARTNER_ID,
            Some("Partner A"),
            self.rate_limit_per_minute,
        )
        .await
        .expect("partner created");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        TestApp {
            address,
            pool,
            client,
            partner,
            privacy: test_privacy(),
            config,
            server,
            _database: database,
        }
    }
}

async fn start(
    config: &ServeConfig,
) -> (String, PgPool, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let app = Application::build(config)
        .await
        .expect("application builds");
    let address = format!("http://{}", app.address().expect("the API role binds"));
    let pool = app.pool().clone();
    (address, pool, tokio::spawn(app.run()))
}

impl TestApp {
    /// Stops the service abruptly (its tasks are dropped mid-flight, like a killed process)
    /// and starts a new one on the same database.
    pub async fn restart(self) -> TestApp {
        self.server.abort();
        let _ = self.server.await;
        let (address, pool, server) = start(&self.config).await;
        TestApp {
            address,
            pool,
            server,
            ..self
        }
    }

    /// Stops the service abruptly, like [`TestApp::restart`], and starts it again in `role`
    /// on the same database (e.g. an API-only service followed by one that also processes).
    pub async fn restart_as(mut self, role: Role) -> TestApp {
        self.config.role = role;
        self.restart().await
    }

    /// The service's task has ended: it failed (or was stopped), so it does no more work.
    pub fn has_stopped(&self) -> bool {
        self.server.is_finished()
    }

    /// What the service runs.
    pub fn role(&self) -> Role {
        self.config.role
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }
}
