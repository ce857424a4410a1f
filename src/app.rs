//! Building and running the service, shared by `callingest serve`, the tests and the benches.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::Server;
use sqlx::PgPool;

use crate::config::ServeConfig;
use crate::http::{routes, AppState};

/// A bound, migrated service, ready to run.
pub struct Application {
    acceptor: poem::listener::TcpAcceptor,
    address: SocketAddr,
    pool: PgPool,
}

impl Application {
    /// Connects to the database (creating it if needed), applies migrations and binds the listen address
    /// (port 0 picks a free port: see [`Application::address`]).
    pub async fn build(config: &ServeConfig) -> anyhow::Result<Self> {
        let pool = crate::db::prepare(&config.database).await?;
        let acceptor = TcpListener::bind(config.listen.to_string())
            .into_acceptor()
            .await
            .with_context(|| format!("could not listen on {}", config.listen))?;
        let address = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
            .context("listener has no socket address")?;
        Ok(Self {
            acceptor,
            address,
            pool,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Serves until the process gets Ctrl-C / SIGTERM (or the future is dropped).
    pub async fn run(self) -> anyhow::Result<()> {
        tracing::info!(address = %self.address, "callingest listening");
        let app = routes(Arc::new(AppState::new(self.pool.clone())));
        Server::new_with_acceptor(self.acceptor)
            .run_with_graceful_shutdown(
                app,
                shutdown_signal(),
                Some(std::time::Duration::from_secs(10)),
            )
            .await
            .context("HTTP server failed")?;
        self.pool.close().await;
        Ok(())
    }
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
