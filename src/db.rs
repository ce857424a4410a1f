//! Connecting to PostgreSQL and applying the migrations in `migrations/`.
//!
//! Start-up does not depend on start order: while PostgreSQL cannot be reached (not started
//! yet, restarting, refusing connections while it recovers), [`prepare`] retries with jittered
//! exponential backoff up to `CALLINGEST_DB_CONNECT_DEADLINE_MS`. Errors that waiting cannot
//! fix (a wrong password, a malformed URL, a broken migration) fail at once.
//!
//! The URL may list several hosts (libpq's syntax, see [`target`]); the pool follows the one
//! that matches `target_session_attrs` across failovers (see [`follower`]).

pub mod derived;
pub mod follower;
pub mod lag;
pub mod liveness;
pub mod replica;
pub mod session;
pub mod target;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use callingest_privacy::{keyring, MasterKey, Privacy};
use sqlx::migrate::MigrateError;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgPool};
use tokio_retry::strategy::{jitter, ExponentialBackoff};
use tokio_retry::RetryIf;

use crate::config::DatabaseConfig;
use follower::Follower;
use session::SessionAttrs;
use target::Target;

/// The migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// First wait between start-up attempts; it doubles up to [`STARTUP_MAX_WAIT`].
const STARTUP_FIRST_WAIT: Duration = Duration::from_millis(100);
/// Longest wait between start-up attempts (before jitter), so a database that comes up is
/// noticed within seconds.
const STARTUP_MAX_WAIT: Duration = Duration::from_secs(5);

/// One failed step of getting the database ready.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("could not create the database")]
    Create(#[source] sqlx::Error),
    #[error("could not connect to PostgreSQL")]
    Connect(#[source] sqlx::Error),
    #[error("could not apply database migrations")]
    Migrate(#[source] MigrateError),
    #[error("DATABASE_URL is not a valid PostgreSQL URL")]
    Url(#[source] target::TargetError),
}

impl PrepareError {
    /// Whether waiting may fix it: the server is unreachable, starting or out of connections.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Create(err) | Self::Connect(err) => is_transient(err),
            Self::Migrate(MigrateError::Execute(err))
            | Self::Migrate(MigrateError::ExecuteMigration(err, _)) => is_transient(err),
            Self::Migrate(_) | Self::Url(_) => false,
        }
    }
}

/// Errors of an unreachable or not-yet-ready server, as opposed to errors of configuration.
pub fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 57P0x: shutting down / starting up / crashed;
            // 53300: too many connections; 3D000: the database does not exist (yet: the next
            // attempt creates it); 25006: a write reached a read-only node (a primary demoted
            // by a failover: the pool moves to the new one).
            code.starts_with("08")
                || code.starts_with("57P0")
                || code == "53300"
                || code == "3D000"
                || code == "25006"
        }),
        _ => false,
    }
}

/// Whether a failed query means the database is unavailable right now (answered 503 with
/// `Retry-After`) rather than a fault of ours (500): the one classifier of the HTTP layer and
/// ingest alike.
pub fn means_unavailable(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::PoolClosed) || is_transient(err)
}

/// Waits between start-up attempts: 100 ms doubling to 5 s, each between half and all of that
/// (jitter, so a fleet started together does not knock in step).
pub fn startup_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBackoff::from_millis(2)
        .factor(STARTUP_FIRST_WAIT.as_millis() as u64 / 2)
        .max_delay(STARTUP_MAX_WAIT)
        .map(|wait| wait / 2 + jitter(wait / 2))
}

/// Creates the configured database when it does not exist yet, so a fresh PostgreSQL needs no
/// manual step. Without the right to create databases this only logs and carries on; an
/// unreachable server is an error (to retry).
pub async fn ensure_database(config: &DatabaseConfig) -> Result<(), PrepareError> {
    let target = writer_target(config)?;
    let Some(name) = target.database().map(str::to_owned) else {
        return Ok(());
    };
    // Creating it needs the primary: asked through the server's maintenance database.
    let maintenance = Follower::new(
        "primary",
        target.map_hosts(|host| host.database("postgres")),
    );
    let host = match maintenance.resolve().await {
        Ok((index, _)) => maintenance.target().hosts()[index].clone(),
        Err(err) if is_transient(&err) => return Err(PrepareError::Connect(err)),
        Err(err) => {
            // E.g. no right to the maintenance database: connecting to ours will tell.
            tracing::warn!(error = %err, "could not check whether the database exists");
            return Ok(());
        }
    };
    let exists = |name: String| {
        let host = host.clone();
        async move {
            let mut conn = sqlx::PgConnection::connect_with(&host).await?;
            sqlx::query_scalar::<_, bool>(
                "select exists (select 1 from pg_database where datname = $1)",
            )
            .bind(name)
            .fetch_one(&mut conn)
            .await
        }
    };
    match exists(name.clone()).await {
        Ok(true) => Ok(()),
        Ok(false) => {
            tracing::info!("database does not exist yet; creating it");
            let created = async {
                let mut conn = sqlx::PgConnection::connect_with(&host).await?;
                sqlx::query(&format!(
                    "create database \"{}\"",
                    name.replace('"', "\"\"")
                ))
                .execute(&mut conn)
                .await
            };
            match created.await {
                Ok(_) => Ok(()),
                // Another instance (or a command such as `partner create`) created it at the
                // same moment: what we wanted.
                Err(_) if matches!(exists(name).await, Ok(true)) => Ok(()),
                Err(err) => Err(PrepareError::Create(err)),
            }
        }
        Err(err) if is_transient(&err) => Err(PrepareError::Connect(err)),
        Err(err) => {
            tracing::warn!(error = %err, "could not check whether the database exists");
            Ok(())
        }
    }
}

/// `DATABASE_URL` read as a list of hosts. The writer wants a writable session: that is the
/// default when the URL does not say, so a list of hosts always leads to the primary.
fn writer_target(config: &DatabaseConfig) -> Result<Target, PrepareError> {
    Target::parse(config.url.expose(), SessionAttrs::ReadWrite).map_err(PrepareError::Url)
}

/// `DATABASE_READ_URL` read as a list of hosts. Without `target_session_attrs` any host that
/// answers will do, as in libpq (`prefer-standby` is the usual choice for a replica list).
pub fn reader_target(url: &str) -> Result<Target, target::TargetError> {
    Target::parse(url, SessionAttrs::Any)
}

/// A pool and the follower that keeps it on the right node.
#[derive(Clone)]
pub struct Database {
    pub pool: PgPool,
    pub follower: Arc<Follower>,
}

/// Makes sure the database exists, connects, and applies pending migrations, retrying while
/// PostgreSQL cannot be reached, for up to `config.connect_deadline`.
pub async fn prepare(config: &DatabaseConfig) -> anyhow::Result<PgPool> {
    Ok(open(config).await?.pool)
}

/// [`prepare`], keeping the follower (for `/readyz`). Warns once when commits do not wait for
/// a synchronous standby: then a 200 is durable on one machine only.
pub async fn open(config: &DatabaseConfig) -> anyhow::Result<Database> {
    let database = prepare_retrying(config).await?;
    let status = database.follower.status();
    if let Some(state) = status.state.as_ref().filter(|s| !s.commits_synchronously()) {
        tracing::warn!(
            host = %status.host,
            synchronous_commit = %state.synchronous_commit,
            synchronous_standby_names = %state.synchronous_standby_names,
            "commits do not wait for a synchronous standby: calls answered 200 may be lost if this database machine is lost (see README, HA PostgreSQL)"
        );
    }
    Ok(database)
}

async fn prepare_retrying(config: &DatabaseConfig) -> anyhow::Result<Database> {
    let deadline = config.connect_deadline;
    let last_error: Mutex<Option<String>> = Mutex::default();
    let attempt = || async {
        let result = prepare_once(config).await;
        if let Err(err) = &result {
            let message = crate::error_chain::ErrorChain(err).to_string();
            if err.is_transient() {
                metrics::counter!("callingest_database_connect_retries_total").increment(1);
                tracing::warn!(error = %message, "database not ready yet; retrying");
            }
            *last_error.lock().expect("not poisoned") = Some(message);
        }
        result
    };
    let retrying = RetryIf::start(startup_backoff(), attempt, PrepareError::is_transient);
    match tokio::time::timeout(deadline, retrying).await {
        Ok(result) => result.map_err(anyhow::Error::from),
        Err(_) => {
            let last = last_error.lock().expect("not poisoned").take();
            Err(anyhow::anyhow!(
                "the database was not ready within {} ms (CALLINGEST_DB_CONNECT_DEADLINE_MS); last error: {}",
                deadline.as_millis(),
                last.unwrap_or_else(|| "none (the last attempt was still running)".into())
            ))
        }
    }
}

async fn prepare_once(config: &DatabaseConfig) -> Result<Database, PrepareError> {
    ensure_database(config).await?;
    let database = connect_pool("primary", writer_target(config)?, config)
        .await
        .map_err(PrepareError::Connect)?;
    if let Err(err) = MIGRATOR.run(&database.pool).await {
        database.pool.close().await;
        return Err(PrepareError::Migrate(err));
    }
    Ok(database)
}

/// The pool of the configured database, without retrying (the caller decides).
pub async fn connect(config: &DatabaseConfig) -> anyhow::Result<PgPool> {
    let target = writer_target(config)?;
    Ok(connect_pool("primary", target, config)
        .await
        .context("could not connect to PostgreSQL")?
        .pool)
}

/// A pool on the first host of `target` that matches, following it across failovers: every new
/// connection is checked, connections opened before a switch of host are dropped, and a task
/// watches the node until the pool is closed.
async fn connect_pool(
    name: &'static str,
    target: Target,
    config: &DatabaseConfig,
) -> Result<Database, sqlx::Error> {
    // A session left idle inside a transaction would hold back every reader of the event log.
    let target =
        target.map_hosts(|host| host.options([("idle_in_transaction_session_timeout", "60000")]));
    let follower = Follower::new(name, target);
    let (index, state) = follower.resolve().await?;
    follower.use_host(index, state);
    let checked = follower.clone();
    let aged = follower.clone();
    let options = PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(config.acquire_timeout)
        .after_connect(move |conn, _| {
            let follower = checked.clone();
            Box::pin(async move { follower.check_new_session(conn).await })
        });
    let pool = liveness::check_before_acquire(options, move |age| !aged.is_stale(age))
        .connect_with(follower.current_options())
        .await?;
    follower.spawn_watch(pool.clone());
    Ok(Database { pool, follower })
}

/// The database prepared (as [`prepare`]) and the keyring opened with the configured master key:
/// what every command that reads or writes personal fields needs.
pub async fn prepare_with_keyring(config: &DatabaseConfig) -> anyhow::Result<(PgPool, Privacy)> {
    let pool = prepare(config).await?;
    let privacy = open_keyring(&pool, config).await?;
    Ok((pool, privacy))
}

/// The keys that seal personal fields: the master key from configuration, checked against the
/// one this database's keyring was sealed with. A missing or wrong key stops the start here,
/// with a message that says what to do.
pub async fn open_keyring(pool: &PgPool, config: &DatabaseConfig) -> anyhow::Result<Privacy> {
    let Some(key) = &config.master_key else {
        anyhow::bail!(
            "CALLINGEST_MASTER_KEY is not set: the service needs the master key that wraps the \
             keys of personal data (32 random bytes in base64, e.g. `openssl rand -base64 32`; \
             scripts/run makes one for local use)"
        );
    };
    let master = MasterKey::from_base64(key.expose())?;
    let previous = config
        .previous_master_key
        .as_ref()
        .map(|k| MasterKey::from_base64(k.expose()))
        .transpose()
        .map_err(|e| {
            anyhow::anyhow!(
                "{}",
                e.to_string()
                    .replace("CALLINGEST_MASTER_KEY", "CALLINGEST_PREVIOUS_MASTER_KEY")
            )
        })?;
    let privacy = keyring::open(pool, &master, previous.as_ref()).await?;
    if previous.is_some() && privacy.previous_version().is_none() {
        tracing::warn!(
            "CALLINGEST_PREVIOUS_MASTER_KEY is set but no master-key rotation is under way: it \
             is not used; remove it"
        );
    }
    Ok(privacy)
}

pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .context("could not apply database migrations")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_up_waits_grow_with_jitter_and_stay_capped() {
        let waits: Vec<Duration> = startup_backoff().take(12).collect();
        // Each wait is between half and all of 100 ms × 2^n, capped at 5 s.
        for (n, wait) in waits.iter().enumerate() {
            let full = (STARTUP_FIRST_WAIT * 2u32.pow(n as u32)).min(STARTUP_MAX_WAIT);
            assert!(
                *wait >= full / 2 && *wait <= full,
                "wait {n}: {wait:?} not within [{:?}, {full:?}]",
                full / 2
            );
        }
        assert!(waits[11] >= STARTUP_MAX_WAIT / 2);
    }

    #[test]
    fn an_unreachable_server_is_worth_waiting_for_and_a_bad_url_is_not() {
        let refused = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(PrepareError::Connect(refused).is_transient());
        assert!(PrepareError::Connect(sqlx::Error::PoolTimedOut).is_transient());
        let bad_url = sqlx::Error::Configuration("no host".into());
        assert!(!PrepareError::Connect(bad_url).is_transient());
        assert!(!PrepareError::Migrate(MigrateError::VersionMissing(1)).is_transient());
    }
}
