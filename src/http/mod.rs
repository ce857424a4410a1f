//! The HTTP API: one poem-openapi service merged from one module per area, plus the
//! operational routes (`/metrics`, `/docs`, `/openapi.json`).

mod error;
mod health;
mod ingest;
mod observe;
mod rate_limit;
mod raw_json;
mod schema;

use std::sync::Arc;

use poem::endpoint::make_sync;
use poem::{get, Endpoint, EndpointExt, Route};
use poem_openapi::{OpenApiService, Tags};
use sqlx::PgPool;

pub use error::{ApiError, ErrorBody, ErrorChain};
pub use ingest::MAX_BODY_BYTES;

use crate::ingest::IngestService;

/// What handlers share.
pub struct AppState {
    pub pool: PgPool,
    pub ingest: IngestService,
    pub rate_limits: rate_limit::PartnerRateLimits,
}

impl AppState {
    pub fn new(pool: PgPool) -> Self {
        Self {
            ingest: IngestService::new(pool.clone()),
            pool,
            rate_limits: Default::default(),
        }
    }
}

#[derive(Tags)]
enum ApiTags {
    /// Submitting calls for processing.
    Ingest,
    /// Probes for orchestrators and load balancers.
    Operations,
}

type Apis = (ingest::IngestApi, health::HealthApi);

fn api_service(state: Arc<AppState>) -> OpenApiService<Apis, ()> {
    let apis = (
        ingest::IngestApi {
            state: state.clone(),
        },
        health::HealthApi { state },
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
    api_service(Arc::new(AppState::new(pool))).spec()
}

/// Every route of the service.
pub fn routes(state: Arc<AppState>) -> impl Endpoint {
    let service = api_service(state);
    let spec = service.spec();
    let docs = service.swagger_ui();
    let metrics = crate::telemetry::metrics_handle();
    Route::new()
        .nest("/", service)
        .nest("/docs", docs)
        .at(
            "/openapi.json",
            get(make_sync(move |_| {
                poem::Response::builder()
                    .content_type("application/json")
                    .body(spec.clone())
            })),
        )
        .at("/metrics", get(make_sync(move |_| metrics.render())))
        .catch_all_error(error::json_error)
        .around(observe::observe)
}
