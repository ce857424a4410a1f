//! When a pooled connection is checked before it is handed out.
//!
//! sqlx's default (`test_before_acquire`) pings every connection on acquire, and it pings again
//! on every release: two round trips for each query, a few percent of what an ingest batch
//! costs. The ping on release has just seen the connection alive, so the pools ping on acquire
//! only a connection idle for longer than [`BYPASS_WINDOW`] (HikariCP calls this its "alive
//! bypass window"): one left in the pool through a database restart is still found dead and
//! replaced before anyone gets it. A node that goes away within the window costs one failed
//! query, answered 503 and retried, as a node going away during a query would.

use std::time::Duration;

use sqlx::pool::PoolConnectionMetadata;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection};

/// A connection released less than this long ago is handed out without a ping.
pub const BYPASS_WINDOW: Duration = Duration::from_millis(500);

/// `options` checking each connection before it is handed out: `fresh(age)` first (a pool
/// following failovers refuses connections opened before a switch), then [`alive`], in place
/// of sqlx's ping on every acquire. Both pools are built through here, so neither pings twice.
pub fn check_before_acquire(
    options: PgPoolOptions,
    fresh: impl Fn(Duration) -> bool + Send + Sync + 'static,
) -> PgPoolOptions {
    options
        .test_before_acquire(false)
        .before_acquire(move |conn, meta| {
            let fresh = fresh(meta.age);
            Box::pin(async move { Ok(fresh && alive(conn, &meta).await) })
        })
}

/// Whether `conn` may be handed out: used within the window, or answering a ping.
async fn alive(conn: &mut PgConnection, meta: &PoolConnectionMetadata) -> bool {
    meta.idle_for < BYPASS_WINDOW || conn.ping().await.is_ok()
}
