//! Typed configuration, read from the environment (or the matching command line flags).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

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

    /// How long a request waits for a free connection before it is answered 503.
    #[arg(
        long = "db-acquire-timeout-ms",
        env = "CALLINGEST_DB_ACQUIRE_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub acquire_timeout_ms: u64,
}

impl DatabaseConfig {
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.acquire_timeout_ms)
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
}
