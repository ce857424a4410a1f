//! Claims are fair between partners: a partner's backlog does not hold another partner's job
//! behind it, in any pool, and the turn bookkeeping never holds work back.

use std::collections::HashSet;
use std::time::Duration;

use callingest::config::{DatabaseConfig, Secret};
use callingest::jobs::{claim_next, Queue, CALLBACKS, FETCH, TRANSCRIBE};
use sqlx::PgPool;

use crate::helpers::TestDatabase;

const LEASE: Duration = Duration::from_secs(30);

async fn database() -> (TestDatabase, PgPool) {
    let database = TestDatabase::create().await;
    let pool = callingest::db::prepare(&DatabaseConfig {
        url: Secret::new(database.url.clone()),
        max_connections: 4,
        acquire_timeout: std::time::Duration::from_secs(5),
        connect_deadline: std::time::Duration::from_secs(10),
        master_key: Some(Secret::new(crate::helpers::TEST_MASTER_KEY)),
        previous_master_key: None,
    })
    .await
    .expect("the database migrates");
    (database, pool)
}

/// Queues `count` jobs of `partner` in `stage`, due `age_s` seconds ago and one millisecond
/// apart, as the projection does (rotation included).
async fn queue_jobs(pool: &PgPool, partner: &str, stage: &str, count: i64, age_s: i64) {
    sqlx::query(
        "insert into processing_job (call_aggregate_id, partner_id, call_id, recording_url, due_at, stage)
         select $1 || ':' || $2 || '-' || i, $1, $2 || '-' || i, 'https://example.com/r.wav',
                now() - $4 * interval '1 second' + i * interval '1 millisecond', $2
         from generate_series(1, $3) as i",
    )
    .bind(partner)
    .bind(stage)
    .bind(count)
    .bind(age_s)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "insert into job_queue_partner (queue, partner_id) values ($1, $2) on conflict do nothing",
    )
    .bind(stage)
    .bind(partner)
    .execute(pool)
    .await
    .unwrap();
}

async fn claim(pool: &PgPool, queue: &Queue) -> Option<String> {
    claim_next(pool, queue, "test", LEASE)
        .await
        .unwrap()
        .map(|c| c.call_aggregate_id)
}

#[tokio::test]
async fn a_partners_job_is_claimed_before_an_older_backlog_of_another_partner() {
    let (_db, pool) = database().await;
    queue_jobs(&pool, "b", "fetch", 500, 3_600).await;
    // B has been served for a while.
    for _ in 0..3 {
        assert!(claim(&pool, &FETCH).await.unwrap().starts_with("b:"));
    }
    queue_jobs(&pool, "a", "fetch", 3, 1).await;
    let next: Vec<String> = [
        claim(&pool, &FETCH).await,
        claim(&pool, &FETCH).await,
        claim(&pool, &FETCH).await,
        claim(&pool, &FETCH).await,
    ]
    .into_iter()
    .flatten()
    .collect();
    // Turns alternate: A first (never served), then B, then A again, although all of B's
    // backlog is an hour older than A's jobs.
    let partners: Vec<&str> = next.iter().map(|id| &id[..1]).collect();
    assert_eq!(partners, ["a", "b", "a", "b"], "claimed {next:?}");
    // Each partner's own jobs go oldest first.
    assert_eq!(next[0], "a:fetch-1");
    assert_eq!(next[2], "a:fetch-2");
}

#[tokio::test]
async fn every_pool_takes_turns_on_its_own() {
    let (_db, pool) = database().await;
    queue_jobs(&pool, "b", "transcribe", 50, 600).await;
    queue_jobs(&pool, "a", "transcribe", 1, 1).await;
    // A fetch backlog does not count in the transcription pool's turns, nor the other way.
    queue_jobs(&pool, "c", "fetch", 50, 600).await;
    let first_two: HashSet<String> = [
        claim(&pool, &TRANSCRIBE).await,
        claim(&pool, &TRANSCRIBE).await,
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(first_two.contains("a:transcribe-1"), "{first_two:?}");
    assert!(claim(&pool, &FETCH).await.unwrap().starts_with("c:"));

    // Callback deliveries: the partner comes from the call's aggregate id.
    sqlx::query(
        "insert into callback_delivery (call_aggregate_id, due_at)
         select 'b:cb-' || i, now() - interval '1 hour' + i * interval '1 millisecond'
         from generate_series(1, 100) as i
         union all select 'a:cb-1', now()",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "insert into job_queue_partner (queue, partner_id) values ('callbacks', 'a'), ('callbacks', 'b')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let delivered: Vec<String> = [
        claim(&pool, &CALLBACKS).await,
        claim(&pool, &CALLBACKS).await,
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(delivered.contains(&"a:cb-1".to_owned()), "{delivered:?}");
}

#[tokio::test]
async fn jobs_of_a_partner_missing_from_the_rotation_are_still_claimed() {
    let (_db, pool) = database().await;
    queue_jobs(&pool, "a", "fetch", 2, 10).await;
    sqlx::query("delete from job_queue_partner")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(claim(&pool, &FETCH).await.as_deref(), Some("a:fetch-1"));
    // ... and the partner is back in the rotation.
    let back: i64 =
        sqlx::query_scalar("select count(*) from job_queue_partner where partner_id = 'a'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(back, 1);
}

#[tokio::test]
async fn a_partner_with_nothing_due_rests_and_one_with_nothing_queued_leaves_the_rotation() {
    let (_db, pool) = database().await;
    // A's only job is a retry due in a minute; C has no job at all.
    queue_jobs(&pool, "a", "fetch", 1, -60).await;
    queue_jobs(&pool, "b", "fetch", 5, 10).await;
    sqlx::query("insert into job_queue_partner (queue, partner_id) values ('fetch', 'c')")
        .execute(&pool)
        .await
        .unwrap();
    // Whatever the order of their first turns, A and C have had one within three claims.
    for _ in 0..3 {
        assert!(claim(&pool, &FETCH).await.unwrap().starts_with("b:"));
    }
    let resting: bool = sqlx::query_scalar(
        "select idle_until > now() + interval '50 seconds' from job_queue_partner
         where queue = 'fetch' and partner_id = 'a'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(resting, "A rests until its retry is due");
    let c_rows: i64 =
        sqlx::query_scalar("select count(*) from job_queue_partner where partner_id = 'c'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(c_rows, 0, "C left the rotation");
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_with_a_new_token() {
    let (_db, pool) = database().await;
    queue_jobs(&pool, "a", "fetch", 1, 10).await;
    let first = claim_next(&pool, &FETCH, "w1", Duration::from_millis(200))
        .await
        .unwrap()
        .unwrap();
    assert!(!first.taken_over);
    assert_eq!(claim(&pool, &FETCH).await, None, "leased: nothing to claim");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = claim_next(&pool, &FETCH, "w2", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.call_aggregate_id, first.call_aggregate_id);
    assert!(second.taken_over);
    assert_ne!(second.token, first.token);
}
