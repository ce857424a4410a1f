//! The HTTP API: one poem-openapi service merged from one module per area, plus the
//! operational routes (`/docs`, `/openapi.json`; `/metrics` and the probes are served by
//! [`server::HttpServer`] for every role).

mod admin;
mod admin_projections;
mod agents;
mod auth;
mod body_limit;
mod calls;
mod client_addr;
mod data_privacy;
mod error;
mod health;
mod ingest;
mod login_throttle;
mod observe;
mod rate_limit;
mod raw_json;
mod schema;
mod security;
pub mod serde_json_body;
pub mod server;
mod status_schema;
mod support;
mod validation_gate;
mod view_schema;

use std::sync::Arc;

use poem::endpoint::make_sync;
use poem::{get, Endpoint, EndpointExt, Route};
use poem_openapi::{OpenApiService, Tags};
use sqlx::PgPool;

pub use body_limit::SMALL_BODY_BYTES;
pub use error::{ApiError, ErrorBody, ErrorChain};
pub use ingest::MAX_BODY_BYTES;

use callingest_domain::call::Call;

use callingest_privacy::Privacy;

use crate::config::{HttpConfig, Secret};
use crate::db::replica::Reads;
use crate::event_store::Store;
use crate::health::Health;
use crate::ingest::IngestService;

/// What handlers share.
pub struct AppState {
    pub pool: PgPool,
    pub ingest: IngestService,
    pub calls: Store<Call>,
    /// Opens the sealed personal fields of what handlers read from the event log.
    pub privacy: Privacy,
    pub rate_limits: rate_limit::PartnerRateLimits,
    pub admin_token: Option<Secret>,
    /// Turns of batch validation, off the async runtime's threads.
    pub validation: validation_gate::ValidationGate,
    pub trusted_proxies: client_addr::TrustedProxies,
    pub login_throttle: login_throttle::LoginThrottle,
    /// What `/healthz` and `/readyz` report.
    pub health: Arc<Health>,
    /// Where the listing endpoints read: a replica when configured, else `pool`.
    pub reads: Reads,
}

impl AppState {
    pub fn new(pool: PgPool, privacy: &Privacy, admin_token: Option<Secret>) -> Self {
        let (global, per_partner) = HttpConfig::default().validation_limits();
        Self {
            ingest: IngestService::new(pool.clone(), privacy),
            calls: crate::event_store::store(pool.clone(), privacy),
            privacy: privacy.clone(),
            rate_limits: rate_limit::PartnerRateLimits::new(&pool),
            health: Arc::new(Health::connected(pool.clone())),
            reads: Reads::primary_only(pool.clone()),
            pool,
            admin_token,
            validation: validation_gate::ValidationGate::new(global, per_partner),
            trusted_proxies: Default::default(),
            login_throttle: Default::default(),
        }
    }

    /// Applies the HTTP settings of `serve` (proxies, validation bounds).
    pub fn with_http_config(mut self, config: &HttpConfig) -> Self {
        let (global, per_partner) = config.validation_limits();
        self.validation = validation_gate::ValidationGate::new(global, per_partner);
        self.trusted_proxies = client_addr::TrustedProxies::new(config.trusted_proxies.clone());
        self
    }

    /// Probes report `health` (the instance's own, with its background heartbeat).
    pub fn with_health(self, health: Arc<Health>) -> Self {
        Self { health, ..self }
    }

    /// The listing endpoints read through `reads` (a replica, see [`crate::db::replica`]).
    pub fn with_reads(self, reads: Reads) -> Self {
        Self { reads, ..self }
    }
}

#[derive(Tags)]
enum ApiTags {
    /// Submitting calls for processing.
    Ingest,
    /// Reading your calls, batches and call histories.
    Calls,
    /// Support staff: auditing and redelivering (admin token).
    Support,
    /// Data subjects' rights: finding and erasing a person's data (GDPR art. 15 and 17).
    DataPrivacy,
    /// Probes for orchestrators and load balancers.
    Operations,
}

type Apis = (
    ingest::IngestApi,
    calls::CallsApi,
    agents::AgentsApi,
    admin::AdminApi,
    admin_projections::AdminProjectionsApi,
    data_privacy::DataPrivacyApi,
    health::HealthApi,
);

fn api_service(state: Arc<AppState>) -> OpenApiService<Apis, ()> {
    let apis = (
        ingest::IngestApi {
            state: state.clone(),
        },
        calls::CallsApi {
            state: state.clone(),
        },
        agents::AgentsApi {
            state: state.clone(),
        },
        admin::AdminApi {
            state: state.clone(),
        },
        admin_projections::AdminProjectionsApi {
            state: state.clone(),
        },
        data_privacy::DataPrivacyApi {
            state: state.clone(),
        },
        health::HealthApi {
            health: state.health.clone(),
        },
    );
    OpenApiService::new(apis, "callingest", env!("CARGO_PKG_VERSION")).description(
        "Batch call ingestion for partners of the call-analytics platform: submit call \
         recordings, have them processed asynchronously, get the outcome on your callback URL.",
    )
}

/// The OpenAPI document, exactly as served at `/openapi.json`. The handlers are never called,
/// so the pool is a lazy one that never connects.
pub fn openapi_json() -> String {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy("postgres://spec-only.invalid/none")
        .expect("a static URL parses");
    // Nothing is sealed or opened either: any key will do.
    let privacy = Privacy::new(
        &callingest_privacy::MasterKey::from_base64(
            &callingest_privacy::MasterKey::generate_base64(),
        )
        .expect("a generated key parses"),
    );
    document(&api_service(Arc::new(AppState::new(pool, &privacy, None))))
}

/// The document of `service`, with the security requirements it must state (see
/// [`security`]).
fn document(service: &OpenApiService<Apis, ()>) -> String {
    security::require_partner_id_with_each_key(&service.spec())
}

/// The routes of the partner and support API (the probes included, for the spec). Served
/// behind [`server::HttpServer`], which adds `/metrics`, JSON errors and request logging.
pub fn routes(state: Arc<AppState>) -> impl Endpoint {
    let service = api_service(state.clone());
    let spec = document(&service);
    let docs = service.swagger_ui();
    Route::new()
        .nest("/", service)
        .nest("/docs", docs)
        .nest("/support", support::routes(state.clone()))
        .at(
            "/openapi.json",
            get(make_sync(move |_| {
                poem::Response::builder()
                    .content_type("application/json")
                    .body(spec.clone())
            })),
        )
        .around(body_limit::limit_body)
        // For the credential extractors (`auth::PartnerAuth`, `auth::AdminAuth`).
        .data(state)
}

/// Sets `callingest_projection_parked_events`: events each projection has parked.
pub(crate) async fn record_parked_events(pool: &PgPool) {
    let gauge = callingest_projections::parking::record_parked_gauge(pool);
    match tokio::time::timeout(std::time::Duration::from_secs(1), gauge).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::warn!(error = %err, "could not count parked events"),
        Err(_) => tracing::warn!("counting parked events timed out"),
    }
}

/// Sets `callingest_projection_lag_events` from the checkpoints: how many events each
/// projection has yet to apply (by position, so approximate while writers are in flight).
async fn record_projection_lag(pool: &PgPool) {
    let query = sqlx::query_as::<_, (String, i64)>(
        "select name, greatest((select coalesce(max(global_position), 0) from events) - global_position, 0)
         from projection_checkpoint",
    )
    .fetch_all(pool);
    match tokio::time::timeout(std::time::Duration::from_secs(1), query).await {
        Ok(Ok(rows)) => {
            for (name, lag) in rows {
                metrics::gauge!("callingest_projection_lag_events", "projection" => name)
                    .set(lag as f64);
            }
        }
        Ok(Err(err)) => tracing::warn!(error = %err, "could not read projection checkpoints"),
        Err(_) => tracing::warn!("reading projection checkpoints timed out"),
    }
}
