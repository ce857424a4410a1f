//! The projector's parking on a real PostgreSQL (`DATABASE_URL`, default the local server), with
//! a projection that records what it applies and refuses events marked bad: culprits are
//! found inside a page, their aggregates' later events held, everything else applied once and
//! in order, and failures that do not lie in the data fail the page as before. Also: a replay
//! over several pages, each read while the one before is applied, applies every event once and
//! in log order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use callingest_projections::{Projection, ProjectionError, Projector, StoredEvent};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// A database for one test, dropped at the end.
struct Database {
    name: String,
    server: sqlx::postgres::PgConnectOptions,
    pool: PgPool,
}

impl Database {
    async fn create() -> Self {
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let server: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
        let name = format!("callingest_parking_{}", uuid::Uuid::new_v4().simple());
        let mut admin = server.clone().database("postgres").connect().await.unwrap();
        sqlx::query(&format!("create database \"{name}\""))
            .execute(&mut admin)
            .await
            .unwrap();
        let pool = PgPool::connect_with(server.clone().database(&name))
            .await
            .unwrap();
        MIGRATOR.run(&pool).await.unwrap();
        sqlx::raw_sql(
            "create table applied (n bigserial, global_position bigint not null,
                                   aggregate_id text not null, sequence bigint not null)",
        )
        .execute(&pool)
        .await
        .unwrap();
        Self { name, server, pool }
    }

    async fn drop(self) {
        self.pool.close().await;
        let mut admin = self.server.database("postgres").connect().await.unwrap();
        sqlx::query(&format!("drop database \"{}\" with (force)", self.name))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
    }
}

/// Applies `Test` events by recording them in `applied`; refuses a payload `{"bad": true}` as
/// undecodable, and (when `broken`) fails every page with a missing table.
#[derive(Default)]
struct Recorder {
    broken: AtomicBool,
}

#[derive(serde::Deserialize)]
struct Payload {
    bad: bool,
}

#[async_trait::async_trait]
impl Projection for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["applied"]
    }

    async fn apply_page(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), ProjectionError> {
        if self.broken.load(Ordering::SeqCst) {
            sqlx::query("select * from no_such_table")
                .execute(&mut *conn)
                .await?;
        }
        for event in events {
            let payload: Payload = event
                .decode()
                .map_err(|e| ProjectionError::undecodable(event, e))?;
            if payload.bad {
                let reason = "marked bad";
                return Err(ProjectionError::undecodable(
                    event,
                    serde::de::Error::custom(reason),
                ));
            }
        }
        let positions: Vec<i64> = events.iter().map(|e| e.global_position).collect();
        let ids: Vec<&str> = events.iter().map(|e| e.aggregate_id.as_str()).collect();
        let sequences: Vec<i64> = events.iter().map(|e| e.sequence).collect();
        sqlx::query(
            "insert into applied (global_position, aggregate_id, sequence)
             select * from unnest($1::bigint[], $2::text[], $3::bigint[])",
        )
        .bind(&positions)
        .bind(&ids)
        .bind(&sequences)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// Appends, in one transaction, `per_aggregate` events to each of `aggregates` aggregates,
/// interleaved; the events in `bad` (as `(aggregate, sequence)`) are marked bad.
async fn append(pool: &PgPool, aggregates: usize, per_aggregate: i64, bad: &[(usize, i64)]) {
    let mut tx = pool.begin().await.unwrap();
    for sequence in 1..=per_aggregate {
        for a in 0..aggregates {
            let is_bad = bad.contains(&(a, sequence));
            sqlx::query(
                "insert into events (aggregate_type, aggregate_id, sequence, event_type,
                                     event_version, payload, metadata)
                 values ('Test', $1, $2, 'Happened', '1', $3, '{}')",
            )
            .bind(format!("agg-{a}"))
            .bind(sequence)
            .bind(serde_json::json!({ "bad": is_bad }))
            .execute(&mut *tx)
            .await
            .unwrap();
        }
    }
    tx.commit().await.unwrap();
}

/// Steps until the whole log is read (other databases of the cluster may hold the snapshot
/// back for a moment).
async fn catch_up_to_the_end(projector: &Projector, pool: &PgPool) {
    for _ in 0..500 {
        projector.catch_up().await.unwrap();
        let behind: bool = sqlx::query_scalar(
            "select coalesce((select global_position from projection_checkpoint
                              where name = 'recorder'), 0)
                    < (select coalesce(max(global_position), 0) from events)",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if !behind {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the projector did not reach the end of the log");
}

/// `(aggregate, sequence)` of what was applied, in the order it was applied.
async fn applied(pool: &PgPool) -> Vec<(String, i64)> {
    sqlx::query_as("select aggregate_id, sequence from applied order by n")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// `(aggregate, sequence, failed)` of what is parked.
async fn parked(pool: &PgPool) -> Vec<(String, i64, bool)> {
    sqlx::query_as(
        "select aggregate_id, sequence, held_behind is null from projection_failure
         where projection = 'recorder' order by aggregate_id collate \"C\", sequence",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

fn of_aggregate(applied: &[(String, i64)], id: &str) -> Vec<i64> {
    applied
        .iter()
        .filter(|(a, _)| a == id)
        .map(|(_, s)| *s)
        .collect()
}

#[tokio::test]
async fn culprits_in_a_page_are_parked_with_their_later_events_and_the_rest_is_applied_once() {
    let db = Database::create().await;
    // 40 aggregates × 25 events in one page; three bad events in two aggregates.
    append(&db.pool, 40, 25, &[(3, 10), (3, 20), (17, 1)]).await;
    let projector = Projector::new(db.pool.clone(), Arc::new(Recorder::default()));

    catch_up_to_the_end(&projector, &db.pool).await;

    let applied = applied(&db.pool).await;
    assert_eq!(applied.len(), 40 * 25 - 16 - 25);
    let mut unique = applied.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), applied.len(), "an event was applied twice");
    assert_eq!(of_aggregate(&applied, "agg-3"), (1..10).collect::<Vec<_>>());
    assert!(of_aggregate(&applied, "agg-17").is_empty());
    for a in (0..40).filter(|a| ![3, 17].contains(a)) {
        // Every other aggregate whole and in order.
        assert_eq!(
            of_aggregate(&applied, &format!("agg-{a}")),
            (1..=25).collect::<Vec<_>>()
        );
    }
    let parked = parked(&db.pool).await;
    let expected: Vec<(String, i64, bool)> = (1..=25)
        .map(|s| ("agg-17".to_owned(), s, s == 1))
        .chain((10..=25).map(|s| ("agg-3".to_owned(), s, s == 10)))
        .collect();
    let mut sorted_expected = expected.clone();
    sorted_expected.sort();
    assert_eq!(parked, sorted_expected);
    // Held events wait behind their aggregate's failed event, with its error.
    let wrong: i64 = sqlx::query_scalar(
        "select count(*) from projection_failure h join projection_failure f
           on f.projection = h.projection and f.global_position = h.held_behind
         where h.aggregate_id <> f.aggregate_id or f.held_behind is not null
            or h.error <> f.error or f.error not like '%marked bad%'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(wrong, 0);

    // Later pages hold the parked aggregates' new events too, and apply the rest.
    sqlx::query(
        "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         values ('Test', 'agg-3', 26, 'Happened', '1', '{\"bad\": false}', '{}'),
                ('Test', 'agg-4', 26, 'Happened', '1', '{\"bad\": false}', '{}')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    catch_up_to_the_end(&projector, &db.pool).await;
    let applied = self::applied(&db.pool).await;
    assert_eq!(of_aggregate(&applied, "agg-4").last(), Some(&26));
    assert_eq!(of_aggregate(&applied, "agg-3").last(), Some(&9));
    let (held, behind): (i64, i64) = sqlx::query_as(
        "select h.sequence, f.sequence from projection_failure h
         join projection_failure f on f.global_position = h.held_behind
         where h.aggregate_id = 'agg-3' and h.sequence = 26",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((held, behind), (26, 10));
    db.drop().await;
}

#[tokio::test]
async fn pages_read_ahead_apply_every_event_once_and_in_log_order() {
    let db = Database::create().await;
    // 500 aggregates × 25 events: two full pages of 5,000 and a short one. A bad event in the
    // second page makes the page read ahead fail whole and be bisected.
    sqlx::query(
        "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         select 'Test', 'agg-' || a, s, 'Happened', '1',
                jsonb_build_object('bad', a = 7 and s = 15), '{}'
         from generate_series(1, 25) s, generate_series(0, 499) a
         order by s, a",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let projector = Projector::new(db.pool.clone(), Arc::new(Recorder::default()));

    catch_up_to_the_end(&projector, &db.pool).await;

    let positions: Vec<i64> = sqlx::query_scalar("select global_position from applied order by n")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        positions.len(),
        500 * 25 - 11,
        "agg-7 is held from sequence 15"
    );
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "applied out of log order, or twice"
    );
    let applied = applied(&db.pool).await;
    assert_eq!(of_aggregate(&applied, "agg-7"), (1..15).collect::<Vec<_>>());
    assert_eq!(
        of_aggregate(&applied, "agg-499"),
        (1..=25).collect::<Vec<_>>()
    );
    assert_eq!(parked(&db.pool).await.len(), 11);
    db.drop().await;
}

#[tokio::test]
async fn a_failure_outside_the_data_fails_the_page_and_parks_nothing() {
    let db = Database::create().await;
    append(&db.pool, 3, 3, &[]).await;
    let recorder = Arc::new(Recorder::default());
    recorder.broken.store(true, Ordering::SeqCst);
    let projector = Projector::new(db.pool.clone(), recorder.clone());

    let err = loop {
        match projector.step().await {
            Ok(0) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            Ok(n) => panic!("{n} events applied by a broken projection"),
            Err(err) => break err,
        }
    };

    assert!(!err.lies_in_the_data(), "{err:?}");
    assert!(parked(&db.pool).await.is_empty());
    let checkpoint: Option<i64> = sqlx::query_scalar(
        "select global_position from projection_checkpoint where name = 'recorder'",
    )
    .fetch_optional(&db.pool)
    .await
    .unwrap();
    assert!(checkpoint.is_none_or(|p| p == 0), "{checkpoint:?}");
    // Mended, the same events apply.
    recorder.broken.store(false, Ordering::SeqCst);
    catch_up_to_the_end(&projector, &db.pool).await;
    assert_eq!(applied(&db.pool).await.len(), 9);
    db.drop().await;
}

#[tokio::test]
async fn retry_applies_what_now_applies_in_order_and_keeps_what_still_fails() {
    let db = Database::create().await;
    // agg-0 fails at 2 (3 and 4 held); agg-1 fails at 1 (2..4 held).
    append(&db.pool, 3, 4, &[(0, 2), (1, 1)]).await;
    let projector = Projector::new(db.pool.clone(), Arc::new(Recorder::default()));
    catch_up_to_the_end(&projector, &db.pool).await;
    assert_eq!(parked(&db.pool).await.len(), 3 + 4);

    // A new release that can read agg-0's event (the log itself stays as it is).
    struct Mended(Recorder);
    #[async_trait::async_trait]
    impl Projection for Mended {
        fn name(&self) -> &'static str {
            "recorder"
        }
        fn tables(&self) -> &'static [&'static str] {
            &["applied"]
        }
        async fn apply_page(
            &self,
            conn: &mut PgConnection,
            events: &[StoredEvent],
        ) -> Result<(), ProjectionError> {
            let mended: Vec<StoredEvent> = events
                .iter()
                .cloned()
                .map(|mut e| {
                    if e.aggregate_id == "agg-0" {
                        e.payload = r#"{"bad": false}"#.to_owned();
                    }
                    e
                })
                .collect();
            self.0.apply_page(conn, &mended).await
        }
    }
    let mended = Projector::new(db.pool.clone(), Arc::new(Mended(Recorder::default())));

    let outcome = mended.retry().await.unwrap();

    assert_eq!((outcome.applied, outcome.still_parked), (3, 4));
    let applied = applied(&db.pool).await;
    assert_eq!(of_aggregate(&applied, "agg-0"), [1, 2, 3, 4]);
    assert!(of_aggregate(&applied, "agg-1").is_empty());
    let expected: Vec<(String, i64, bool)> =
        (1..=4).map(|s| ("agg-1".to_owned(), s, s == 1)).collect();
    assert_eq!(parked(&db.pool).await, expected);
    // New events of the healed aggregate now apply; those of the parked one are still held.
    sqlx::query(
        "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         values ('Test', 'agg-0', 5, 'Happened', '1', '{\"bad\": false}', '{}'),
                ('Test', 'agg-1', 5, 'Happened', '1', '{\"bad\": false}', '{}')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    catch_up_to_the_end(&mended, &db.pool).await;
    let applied = self::applied(&db.pool).await;
    assert_eq!(of_aggregate(&applied, "agg-0"), [1, 2, 3, 4, 5]);
    assert!(of_aggregate(&applied, "agg-1").is_empty());
    assert_eq!(parked(&db.pool).await.len(), 5);

    // A rebuild clears the rows and parks again what still fails.
    mended.reset().await.unwrap();
    assert!(parked(&db.pool).await.is_empty());
    catch_up_to_the_end(&mended, &db.pool).await;
    assert_eq!(parked(&db.pool).await.len(), 5);
    // agg-0 (5 events) and agg-2 (4).
    assert_eq!(self::applied(&db.pool).await.len(), 5 + 4);
    db.drop().await;
}
