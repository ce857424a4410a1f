//! Projectors and worker pools driven by hand, for the tests that control each step (an API-only
//! app's events projected on demand, a worker killed mid-job).

use std::sync::Arc;

use callingest::config::WorkersConfig;
use callingest::jobs::{Runner, Shutdown};
use callingest_domain::call::RetryPolicy;
use callingest_projections::Projector;

use super::app::TestApp;
use super::drain::wait_until;
use super::DEFAULT_WAIT;

/// Catches the projector up until its checkpoint is at the last event of the log (bounded).
pub async fn catch_up_to_the_end(projector: &Projector, app: &TestApp, name: &str) {
    wait_until(
        &format!("projection {name} to reach the end of the log"),
        DEFAULT_WAIT,
        || async move {
            projector.catch_up().await.unwrap();
            let (at, end): (Option<i64>, Option<i64>) = sqlx::query_as(
                "select (select global_position from projection_checkpoint where name = $1),
                        (select max(global_position) from events)",
            )
            .bind(name)
            .fetch_one(&app.pool)
            .await
            .unwrap();
            at == end
        },
    )
    .await;
}

/// Catches the projector up until `count_query` counts `expected` rows (bounded). Other test
/// databases on the same cluster hold back the snapshot xmin for a moment now and then.
pub async fn catch_up_until(
    projector: &Projector,
    app: &TestApp,
    count_query: &str,
    expected: i64,
) {
    wait_until(
        &format!("{count_query} to count {expected}"),
        DEFAULT_WAIT,
        || async move {
            projector.catch_up().await.unwrap();
            let count: i64 = sqlx::query_scalar(count_query)
                .fetch_one(&app.pool)
                .await
                .unwrap();
            count == expected
        },
    )
    .await;
}

/// The fetch pool of `processing` on the app's database, for a test to drive by hand.
pub fn fetch_runner(app: &TestApp, processing: &WorkersConfig, retry: RetryPolicy) -> Runner {
    let fetcher = Arc::new(callingest::app::fetcher(processing).unwrap());
    Runner::new(
        app.pool.clone(),
        &app.privacy,
        &callingest::jobs::FETCH,
        Arc::new(callingest::processing::Worker::new(
            app.pool.clone(),
            fetcher,
            retry,
        )),
        processing.fetch_pool(),
        Shutdown::new(),
    )
}
