//! Liveness and readiness probes. Every role serves them, from the moment the listener is
//! bound: an instance still waiting for its database is alive and not ready.

use std::sync::Arc;

use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::error::ApiError;
use super::ApiTags;
use crate::health::{Health, NotReady, Readiness};

pub struct HealthApi {
    pub health: Arc<Health>,
}

#[derive(Object)]
pub struct HealthStatus {
    /// `ok` or `ready`.
    pub status: String,
    /// On `/readyz`: the database node this instance writes to.
    #[oai(skip_serializing_if_is_none)]
    pub database: Option<DatabaseNode>,
    /// On `/readyz`, when a read replica is configured (`DATABASE_READ_URL`): how far behind
    /// it is. It never makes the instance unready: reads fall back to the primary.
    #[oai(skip_serializing_if_is_none)]
    pub replica: Option<ReplicaNode>,
}

/// The read replica at its last measurement (once a second).
#[derive(Object)]
pub struct ReplicaNode {
    /// Whether the listing endpoints read from it now: connected and no further behind than
    /// `CALLINGEST_DB_READ_MAX_LAG_MS`.
    pub serving_reads: bool,
    /// How old its view of the data may be, in seconds: it holds every commit older than
    /// this. `null` until measured (not connected yet).
    pub lag_seconds: Option<f64>,
}

/// What the database node said at its last check (once a second).
#[derive(Object)]
pub struct DatabaseNode {
    /// The node is a primary (not in recovery).
    pub primary: bool,
    /// Commits wait for a synchronous standby (`synchronous_standby_names` set and
    /// `synchronous_commit` `on`, `remote_write` or `remote_apply`): only then does a 200
    /// survive the loss of the primary.
    pub synchronous_commit: bool,
}

#[OpenApi(tag = "ApiTags::Operations")]
impl HealthApi {
    /// Liveness: the process is up
    ///
    /// Answers 200 as soon as the instance listens, also while it still waits for its database.
    #[oai(path = "/healthz", method = "get", operation_id = "getHealth")]
    async fn healthz(&self) -> Json<HealthStatus> {
        Json(HealthStatus {
            status: "ok".into(),
            database: None,
            replica: None,
        })
    }

    /// Readiness: the instance can do its work
    ///
    /// 200 when the database is connected, migrated and answers, its node is the writable
    /// primary, and (for instances that run workers) the background work is alive; 503 with
    /// the reason otherwise, e.g. while the instance waits for its database at start-up or
    /// follows a failover.
    #[oai(path = "/readyz", method = "get", operation_id = "getReadiness")]
    async fn readyz(&self) -> Result<Json<HealthStatus>, ApiError> {
        match self.health.readiness().await {
            Readiness::Ready => {
                Ok(Json(HealthStatus {
                    status: "ready".into(),
                    database: self.health.database_node().and_then(|node| node.state).map(
                        |state| DatabaseNode {
                            primary: !state.in_recovery,
                            synchronous_commit: state.commits_synchronously(),
                        },
                    ),
                    replica: self.health.replica().map(|replica| ReplicaNode {
                        serving_reads: replica.serving_reads,
                        lag_seconds: replica.lag.map(|lag| lag.as_secs_f64()),
                    }),
                }))
            }
            // Logged: an outage of a running instance is worth a line.
            Readiness::NotReady(reason @ NotReady::DatabaseUnreachable(_)) => {
                Err(ApiError::unavailable(&reason))
            }
            Readiness::NotReady(reason) => Err(ApiError::unavailable_because(reason.to_string())),
        }
    }
}
