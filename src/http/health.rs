//! Liveness and readiness probes.

use std::sync::Arc;
use std::time::Duration;

use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::error::ApiError;
use super::{ApiTags, AppState};

pub struct HealthApi {
    pub state: Arc<AppState>,
}

#[derive(Object)]
pub struct HealthStatus {
    /// `ok` or `ready`.
    pub status: String,
}

#[OpenApi(tag = "ApiTags::Operations")]
impl HealthApi {
    /// Liveness: the process is up
    #[oai(path = "/healthz", method = "get", operation_id = "getHealth")]
    async fn healthz(&self) -> Json<HealthStatus> {
        Json(HealthStatus {
            status: "ok".into(),
        })
    }

    /// Readiness: the database answers
    #[oai(path = "/readyz", method = "get", operation_id = "getReadiness")]
    async fn readyz(&self) -> Result<Json<HealthStatus>, ApiError> {
        let ping = sqlx::query("select 1").execute(&self.state.pool);
        match tokio::time::timeout(Duration::from_secs(2), ping).await {
            Ok(Ok(_)) => Ok(Json(HealthStatus {
                status: "ready".into(),
            })),
            Ok(Err(err)) => Err(ApiError::unavailable(&err)),
            Err(elapsed) => Err(ApiError::unavailable(&elapsed)),
        }
    }
}
