//! `spawn_app()`: a fresh database, the service bound to a free loopback port, one partner.

use std::collections::HashMap;
use std::time::Duration;

use callingest::app::Application;
use callingest::config::{
    CallbacksConfig, DatabaseConfig, FetchConfig, HttpConfig, JobsConfig, OutboundConfig,
    ReplicaConfig, Role, Secret, ServeConfig, WorkersConfig,
};
use callingest::partners::{create_partner, PartnerCredentials};
use callingest_privacy::{MasterKey, Privacy};
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgPool};

pub const BATCH_PATH: &str = "/api/v1/partner/ingest/batch-call";

pub fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database that exists for one test and is dropped with it.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
    server: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        Self::create_on(&server_url()).await
    }

    /// A database on the PostgreSQL server at `server_url`.
    pub async fn create_on(server_url: &str) -> Self {
        let server: PgConnectOptions = server_url.parse().expect("the server URL parses");
        let name = format!("callingest_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = server
            .clone()
            .database("postgres")
            .connect()
            .await
            .expect("connect to PostgreSQL");
        sqlx::query(&format!("create database \"{name}\""))
            .execute(&mut admin)
            .await
            .unwrap();
        let url = server.database(&name).to_url_lossy().to_string();
        Self {
            name,
            url,
            server: server_url.to_owned(),
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (name, server) = (self.name.clone(), self.server.clone());
        // Drop runs outside async context: use a thread with its own small runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let server: PgConnectOptions = server.parse().unwrap();
                if let Ok(mut admin) = server.database("postgres").connect().await {
                    let _ =
                        sqlx::query(&format!("drop database if exists \"{name}\" with (force)"))
                            .execute(&mut admin)
                            .await;
                }
            });
        })
        .join();
    }
}

pub struct TestApp {
    pub address: String,
    pub pool: PgPool,
    pub client: reqwest::Client,
    pub partner: PartnerCredentials,
    /// The service's keys (from [`TEST_MASTER_KEY`]), for tests that run projectors by hand.
    pub privacy: Privacy,
    config: ServeConfig,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// Held so the database lives exactly as long as the app (dropped with it).
    _database: TestDatabase,
}

/// The keys of [`TEST_MASTER_KEY`].
pub fn test_privacy() -> Privacy {
    Privacy::new(&MasterKey::from_base64(TEST_MASTER_KEY).expect("a valid key"))
}

/// The admin token every test app is configured with.
pub const ADMIN_TOKEN: &str = "test-admin-token";
/// The master key of every test service and CLI run (32 bytes of base64; tests only).
pub const TEST_MASTER_KEY: &str = "dGVzdCBtYXN0ZXIga2V5IG9mIGNhbGxpbmdlc3QhISE=";

/// The API alone: nothing is processed, so a test sees exactly the events ingest wrote.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(Role::Api, 600, test_processing()).await
}

pub async fn spawn_app_with_rate_limit(rate_limit_per_minute: u32) -> TestApp {
    spawn_app_with(Role::Api, rate_limit_per_minute, test_processing()).await
}

/// Processing settings for tests: loopback servers allowed, short timeouts and backoff so
/// retries happen within a test.
pub fn test_processing() -> WorkersConfig {
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

pub async fn spawn_app_with(
    role: Role,
    rate_limit_per_minute: u32,
    processing: WorkersConfig,
) -> TestApp {
    spawn_app_on(&server_url(), role, rate_limit_per_minute, processing).await
}

/// The service on a fresh database of the PostgreSQL server at `server_url`.
pub async fn spawn_app_on(
    server_url: &str,
    role: Role,
    rate_limit_per_minute: u32,
    processing: WorkersConfig,
) -> TestApp {
    spawn_app_with_http(
        server_url,
        role,
        rate_limit_per_minute,
        processing,
        Default::default(),
    )
    .await
}

/// [`spawn_app_on`] with HTTP settings of its own (trusted proxies, validation bounds).
pub async fn spawn_app_with_http(
    server_url: &str,
    role: Role,
    rate_limit_per_minute: u32,
    processing: WorkersConfig,
    http: HttpConfig,
) -> TestApp {
    spawn_app_configured(
        server_url,
        role,
        rate_limit_per_minute,
        processing,
        http,
        false,
    )
    .await
}

/// The service whose `DATABASE_READ_URL` is its own database: the read endpoints go through
/// the replica path (lag measured, fallbacks) on the one server.
pub async fn spawn_app_reading_from_itself(role: Role) -> TestApp {
    spawn_app_configured(
        &server_url(),
        role,
        600,
        test_processing(),
        Default::default(),
        true,
    )
    .await
}

async fn spawn_app_configured(
    server_url: &str,
    role: Role,
    rate_limit_per_minute: u32,
    processing: WorkersConfig,
    http: HttpConfig,
    read_from_itself: bool,
) -> TestApp {
    // Quiet unless asked: `TEST_LOG=1 cargo test ...` shows the service's logs.
    if std::env::var_os("TEST_LOG").is_some() {
        callingest::telemetry::init_logging(&Default::default()).expect("CALLINGEST_LOG parses");
    }
    let database = TestDatabase::create_on(server_url).await;
    let config = ServeConfig {
        database: DatabaseConfig {
            url: Secret::new(database.url.clone()),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(2),
            connect_deadline: Duration::from_secs(120),
            master_key: Some(Secret::new(crate::helpers::TEST_MASTER_KEY)),
            previous_master_key: None,
        },
        role,
        http: HttpConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_token: Some(Secret::new(ADMIN_TOKEN)),
            ..http
        },
        workers: processing,
        replica: ReplicaConfig {
            read_url: read_from_itself.then(|| Secret::new(database.url.clone())),
            ..Default::default()
        },
    };
    let (address, pool, server) = start(&config).await;
    let partner = create_partner(&pool, "partner-a", Some("Partner A"), rate_limit_per_minute)
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

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// A batch request with every header right, ready to be altered by a test.
    pub fn batch_request(&self) -> reqwest::RequestBuilder {
        self.batch_request_as(&self.partner)
    }

    pub fn batch_request_as(&self, partner: &PartnerCredentials) -> reqwest::RequestBuilder {
        self.client
            .post(self.url(BATCH_PATH))
            .header("x-partner-id", &partner.partner_id)
            .header("x-api-key", &partner.api_key)
            .header("x-tenant-id", "tenant1")
            .header("x-sub-tenant-id", "subtenant1")
    }

    pub async fn post_batch(&self, body: &Value) -> reqwest::Response {
        self.batch_request()
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("select count(*) from events")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// `(event_type, payload)` of one call's events, in order, as readers see them: personal
    /// fields opened through the service's one decrypt path.
    pub async fn call_events(&self, partner_id: &str, call_id: &str) -> Vec<(String, Value)> {
        let id = format!("{partner_id}:{call_id}");
        let keys =
            callingest_privacy::keyring::load(&self.pool, &self.privacy, std::slice::from_ref(&id))
                .await
                .unwrap();
        self.stored_call_events(partner_id, call_id)
            .await
            .into_iter()
            .map(|(event_type, payload)| {
                // An event a test wrote undecodable on purpose is shown as stored.
                let Ok(event) =
                    serde_json::from_value::<callingest_domain::call::CallEvent>(payload.clone())
                else {
                    return (event_type, payload);
                };
                let opened =
                    callingest_privacy::seal::open_event(&self.privacy, &id, event, keys.get(&id))
                        .unwrap();
                (event_type, serde_json::to_value(opened).unwrap())
            })
            .collect()
    }

    /// `(event_type, payload)` of one call's events, in order, as the event log holds them.
    pub async fn stored_call_events(
        &self,
        partner_id: &str,
        call_id: &str,
    ) -> Vec<(String, Value)> {
        sqlx::query_as(
            "select event_type, payload from events
             where aggregate_type = 'Call' and aggregate_id = $1 order by sequence",
        )
        .bind(aggregate_id(partner_id, call_id))
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    pub async fn count_events_of_type(&self, event_type: &str) -> i64 {
        sqlx::query_scalar("select count(*) from events where event_type = $1")
            .bind(event_type)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

/// The item of the published example, with its `example.com` URLs moved to `.invalid` hosts:
/// tests never point at anything off this machine.
pub fn published_item() -> Value {
    json!({
        "call": {
            "id": "call123",
            "recording_url": "https://recordings.invalid/recordings/call123.mp3",
            "start_time": "2023-01-01T10:00:00Z",
            "end_time": "2023-01-01T10:30:00Z",
            "contact_number": "+1234567890"
        },
        "agent": {"id": "agent123", "email": "agent@example.com", "name": "John Doe"},
        "customer": {
            "id": "customer123",
            "name": "Jane Smith",
            "email": "customer@example.com",
            "disposition_status": "interested"
        },
        "industry": "Technology",
        "function": "Sales",
        "callback_url": "https://partner.invalid/callback",
        "metadata": {"campaign": "Q1 Outreach", "source": "Website"}
    })
}

pub fn item_with_id(id: &str) -> Value {
    let mut item = published_item();
    item["call"]["id"] = json!(id);
    item
}

pub fn batch(items: Vec<Value>) -> Value {
    json!({ "data": items })
}

pub async fn json_body(response: reqwest::Response) -> Value {
    response.json().await.expect("JSON body")
}

/// Held by the tests that measure time or throughput with several real processes (the
/// `#[ignore]`d ones, run by `scripts/test --test api -- --ignored`), so that they run one at a
/// time even though cargo runs tests in parallel. A tokio mutex: a failed test does not poison
/// it for the next.
pub async fn run_alone() -> tokio::sync::MutexGuard<'static, ()> {
    static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    ALONE.lock().await
}

/// Every call in `accepted` (ids of `partner`, answered 200) is in the event log exactly once,
/// was processed exactly once (completed or failed) and called back exactly once: what the
/// crash and failover tests hold the service to after their load.
pub async fn assert_each_call_logged_processed_and_called_back_once(
    pool: &PgPool,
    partner: &str,
    accepted: &[String],
) {
    let counts: Vec<(String, String, i64)> = sqlx::query_as(
        "select aggregate_id, event_type, count(*) from events where aggregate_type = 'Call'
         group by aggregate_id, event_type",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut per_call: HashMap<String, HashMap<String, i64>> = HashMap::new();
    for (id, event_type, count) in counts {
        per_call.entry(id).or_default().insert(event_type, count);
    }
    for call in accepted {
        let events = per_call
            .get(&aggregate_id(partner, call))
            .unwrap_or_else(|| panic!("{call} answered 200 but missing"));
        let get = |t: &str| events.get(t).copied().unwrap_or(0);
        assert_eq!(get("CallAccepted"), 1, "{call}: {events:?}");
        assert_eq!(
            get("ProcessingCompleted") + get("ProcessingFailed"),
            1,
            "{call} not processed exactly once: {events:?}"
        );
        assert_eq!(get("CallbackDelivered"), 1, "{call}: {events:?}");
    }
}

/// The id of a call's aggregate, built as the service builds it.
pub fn aggregate_id(partner_id: &str, call_id: &str) -> String {
    callingest_domain::call::call_aggregate_id(
        &callingest_domain::values::PartnerId::parse(partner_id).expect("a valid partner id"),
        &callingest_domain::values::CallId::parse(call_id).expect("a valid call id"),
    )
}
