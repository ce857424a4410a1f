//! Connecting to PostgreSQL and applying the migrations in `migrations/`.

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::config::DatabaseConfig;

/// The migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Creates the configured database when it does not exist yet, so a fresh PostgreSQL needs no
/// manual step. Without the right to create databases this only logs and carries on.
pub async fn ensure_database(config: &DatabaseConfig) -> anyhow::Result<()> {
    use sqlx::migrate::MigrateDatabase;
    let url = config.url.expose();
    match sqlx::Postgres::database_exists(url).await {
        Ok(true) => Ok(()),
        Ok(false) => {
            tracing::info!("database does not exist yet; creating it");
            sqlx::Postgres::create_database(url)
                .await
                .context("could not create the database")
        }
        Err(err) => {
            tracing::warn!(error = %err, "could not check whether the database exists");
            Ok(())
        }
    }
}

/// Makes sure the database exists, connects, and applies pending migrations.
pub async fn prepare(config: &DatabaseConfig) -> anyhow::Result<PgPool> {
    ensure_database(config).await?;
    let pool = connect(config).await?;
    migrate(&pool).await?;
    Ok(pool)
}

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
