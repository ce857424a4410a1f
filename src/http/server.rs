//! The HTTP side of an instance, whatever its role. The listener is bound first, before the
//! database is reached, and at once answers the operations routes (`/healthz`, `/readyz`,
//! `/metrics`), so an instance waiting for its database is visibly alive and not ready. The
//! partner and support API is switched on by [`HttpServer::serve_api`] once the instance has its
//! database, and only for the roles that serve it: a worker serves the operations routes alone.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use poem::endpoint::{make, BoxEndpoint};
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::{get, Endpoint, EndpointExt, IntoResponse, Request, Response, Route, Server};
use poem_openapi::OpenApiService;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::error::{self, ApiError};
use super::health::HealthApi;
use super::{observe, routes, AppState};
use crate::health::Health;

/// How long requests in flight may take to finish once shutdown starts.
const GRACEFUL_SHUTDOWN: Duration = Duration::from_secs(10);

/// A bound, running HTTP server. Dropping it stops the server abruptly.
pub struct HttpServer {
    address: SocketAddr,
    api: Arc<OnceLock<BoxEndpoint<'static>>>,
    stop: Option<oneshot::Sender<()>>,
    task: AbortOnDrop,
}

impl HttpServer {
    /// Binds `listen` (port 0 picks a free port) and starts answering the operations routes.
    /// `serves_api`: whether this instance will serve the API (until then its paths answer 503).
    pub async fn start(
        listen: SocketAddr,
        health: Arc<Health>,
        serves_api: bool,
    ) -> anyhow::Result<Self> {
        let acceptor = TcpListener::bind(listen.to_string())
            .into_acceptor()
            .await
            .with_context(|| format!("could not listen on {listen}"))?;
        let address = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
            .context("listener has no socket address")?;
        let api: Arc<OnceLock<BoxEndpoint<'static>>> = Arc::default();
        let endpoint = Route::new()
            .at("/metrics", metrics_endpoint(health.clone()))
            .nest(
                "/",
                Switch {
                    probes: probes(health).map_to_response().boxed(),
                    api: api.clone(),
                    serves_api,
                },
            )
            .catch_all_error(error::json_error)
            .around(observe::observe);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            Server::new_with_acceptor(acceptor)
                .run_with_graceful_shutdown(
                    endpoint,
                    async {
                        let _ = stopped.await;
                    },
                    Some(GRACEFUL_SHUTDOWN),
                )
                .await
                .context("HTTP server failed")
        });
        Ok(Self {
            address,
            api,
            stop: Some(stop),
            task: AbortOnDrop(task),
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Starts serving the partner and support API next to the operations routes.
    pub fn serve_api(&self, state: Arc<AppState>) {
        let _ = self.api.set(routes(state).map_to_response().boxed());
    }

    /// Serves until `signal`, then stops accepting and lets requests in flight finish (for up
    /// to 10 s). Returns early with the error if the server fails by itself.
    pub async fn serve_until(mut self, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
        tokio::select! {
            ended = &mut self.task.0 => return flatten(ended),
            () = signal => {}
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        flatten((&mut self.task.0).await)
    }
}

fn flatten(ended: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    ended.context("HTTP server task ended abnormally")?
}

struct AbortOnDrop(JoinHandle<anyhow::Result<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The probes alone, served by every role from the start.
fn probes(health: Arc<Health>) -> impl Endpoint {
    let service = OpenApiService::new(
        HealthApi { health },
        "callingest",
        env!("CARGO_PKG_VERSION"),
    );
    Route::new().nest("/", service)
}

/// The API once it is switched on; before that (and for ever on a worker) the probes, with
/// 503 for the API's paths while an API instance is starting.
struct Switch {
    probes: BoxEndpoint<'static>,
    api: Arc<OnceLock<BoxEndpoint<'static>>>,
    serves_api: bool,
}

impl Endpoint for Switch {
    type Output = Response;

    async fn call(&self, request: Request) -> poem::Result<Response> {
        if let Some(api) = self.api.get() {
            return api.call(request).await;
        }
        let is_probe = matches!(request.uri().path(), "/healthz" | "/readyz");
        if self.serves_api && !is_probe {
            return Ok(
                ApiError::unavailable_because("The service is starting; try again shortly")
                    .into_response(),
            );
        }
        self.probes.call(request).await
    }
}

/// `/metrics`: everything recorded through the `metrics` facade, the projection lag (once the
/// database is there) and the process metrics, measured now.
fn metrics_endpoint(health: Arc<Health>) -> impl Endpoint {
    let handle = crate::telemetry::metrics_handle();
    get(make(move |_| {
        let (handle, health) = (handle.clone(), health.clone());
        async move {
            metrics::gauge!("callingest_database_ready").set(if health.pool().is_some() {
                1.0
            } else {
                0.0
            });
            if let Some(silence) = health.background().and_then(|l| l.silence()) {
                metrics::gauge!("callingest_background_heartbeat_age_seconds")
                    .set(silence.as_secs_f64());
            }
            if let Some(pool) = health.pool() {
                super::record_projection_lag(pool).await;
                super::record_parked_events(pool).await;
                crate::jobs::record_queue_metrics(pool).await;
            }
            let mut text = handle.render();
            text.push_str(&crate::process_metrics::render());
            poem::Response::builder()
                .content_type("text/plain; version=0.0.4; charset=utf-8")
                .body(text)
        }
    }))
}
