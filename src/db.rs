//! Connecting to PostgreSQL and applying the migrations in `migrations/`.

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::config::DatabaseConfig;

/// The migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub async fn connect(config: &DatabaseConfig) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = config
        .url
        .expose()
        .parse()
        .context("DATABASE_URL is not a valid PostgreSQL URL")?;
    // A session left idle inside a transaction would hold back every reader of the event log.
    let options = options.options([("idle_in_transaction_session_timeout", "60000")]);
    PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(config.acquire_timeout())
        .connect_with(options)
        .await
        .context("could not connect to PostgreSQL")
}

pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .context("could not apply database migrations")
}
