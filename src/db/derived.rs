//! A small pool of its own beside the main one (other session settings, e.g. the rate limiter's
//! `synchronous_commit = off`) that follows the main pool to whichever node it moved to.
//!
//! How it works: the main pool's options change only when its follower switches host (see
//! [`super::follower`]), and each change is a new `Arc`. Before handing out its pool, a
//! [`DerivedPool`] compares that `Arc` with the one it copied; on a change it copies the new
//! options and drops its connections older than that moment, as the main pool does. New
//! sessions must be writable, so one that reaches a demoted node is refused at once.

use std::sync::{Arc, Mutex};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use super::follower::SwitchClock;

pub struct DerivedPool {
    main: PgPool,
    pool: PgPool,
    customize: fn(PgConnectOptions) -> PgConnectOptions,
    copied: Mutex<Arc<PgConnectOptions>>,
    switched: Arc<SwitchClock>,
}

impl DerivedPool {
    /// A lazy pool of `max_connections` on the node of `main`, with `customize` applied to its
    /// connect options.
    pub fn new(
        main: &PgPool,
        max_connections: u32,
        customize: fn(PgConnectOptions) -> PgConnectOptions,
    ) -> Self {
        let copied = main.connect_options();
        let switched = Arc::new(SwitchClock::default());
        let aged = switched.clone();
        let options = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(main.options().get_acquire_timeout())
            .after_connect(|conn, _| {
                Box::pin(async move {
                    let read_only: bool = sqlx::query_scalar(
                        "select current_setting('transaction_read_only') = 'on'",
                    )
                    .fetch_one(conn)
                    .await?;
                    if read_only {
                        // An Io error: answered 503, like the main pool's refusals.
                        return Err(sqlx::Error::Io(std::io::Error::other(
                            "the node is read-only (a failover is under way)",
                        )));
                    }
                    Ok(())
                })
            });
        let pool = super::liveness::check_before_acquire(options, move |age| !aged.is_older(age))
            .connect_lazy_with(customize((*copied).clone()));
        Self {
            main: main.clone(),
            pool,
            customize,
            copied: Mutex::new(copied),
            switched,
        }
    }

    /// The pool, on the main pool's current node.
    pub fn pool(&self) -> &PgPool {
        let current = self.main.connect_options();
        let mut copied = self.copied.lock().expect("not poisoned");
        if !Arc::ptr_eq(&current, &copied) {
            self.pool
                .set_connect_options((self.customize)((*current).clone()));
            self.switched.mark();
            *copied = current;
        }
        &self.pool
    }
}
