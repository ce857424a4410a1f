//! Multi-host `DATABASE_URL`s on the test server: hosts are tried in order and a session is
//! kept only when it matches `target_session_attrs`. (A real failover: `failover.rs`.)

use std::time::Duration;

use callingest::config::{DatabaseConfig, Secret};
use sqlx::postgres::PgConnectOptions;

use crate::helpers::instances::free_port;
use crate::helpers::{server_url, TestDatabase};

fn config(url: String) -> DatabaseConfig {
    DatabaseConfig {
        url: Secret::new(url),
        max_connections: 2,
        acquire_timeout: std::time::Duration::from_secs(5),
        connect_deadline: std::time::Duration::from_secs(5),
        master_key: Some(Secret::new(crate::helpers::TEST_MASTER_KEY)),
        previous_master_key: None,
    }
}

/// `postgres://user@<dead host>,<test server>/<database>?<query>`.
fn listing_a_dead_host_first(database: &TestDatabase, query: &str) -> (String, String) {
    let server: PgConnectOptions = server_url().parse().unwrap();
    let live = format!("{}:{}", server.get_host(), server.get_port());
    let url = format!(
        "postgres://{}@127.0.0.1:{},{live}/{}?{query}",
        server.get_username(),
        free_port(),
        database.name
    );
    (url, live)
}

#[tokio::test]
async fn a_host_that_does_not_answer_is_skipped_for_the_next_one() {
    let database = TestDatabase::create().await;
    let (url, live) = listing_a_dead_host_first(&database, "target_session_attrs=read-write");
    let opened = callingest::db::open(&config(url)).await.unwrap();
    let one: i32 = sqlx::query_scalar("select 1")
        .fetch_one(&opened.pool)
        .await
        .unwrap();
    assert_eq!(one, 1);
    let status = opened.follower.status();
    assert_eq!(status.host, live);
    assert!(status.matches);
    assert!(!status.state.unwrap().in_recovery);
    opened.pool.close().await;
}

#[tokio::test]
async fn a_primary_is_never_taken_for_a_standby_and_the_error_says_why() {
    let database = TestDatabase::create().await;
    let (url, live) = listing_a_dead_host_first(&database, "target_session_attrs=standby");
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        callingest::db::connect(&config(url)),
    )
    .await
    .expect("answers promptly")
    .unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains("is a standby session")
            && message.contains(&format!("{live}: writable primary")),
        "{message}"
    );
}

#[tokio::test]
async fn a_malformed_host_list_is_refused_at_once_without_the_password() {
    let url = "postgres://u:hunter2@127.0.0.1:5432,127.0.0.1:port/x".to_owned();
    let err = callingest::db::prepare(&config(url)).await.unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains("host 2 has an invalid port number"),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
}
