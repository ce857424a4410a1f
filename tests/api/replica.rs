//! Read replicas (`DATABASE_READ_URL`): the call list, batches, the support search and page may
//! be served by a replica within `CALLINGEST_DB_READ_MAX_LAG_MS`; a call fetched by id stays on
//! the primary; a replica that lags too far, has not got a row yet, or is down hands the read
//! to the primary.
//!
//! The plain test points the read URL at the service's own database. The ignored one starts a
//! real streaming standby (a PostgreSQL 15 primary on a free port and its `pg_basebackup`, on
//! 127.0.0.1, as the `postgres` user when run as root) and pauses its replay.

use std::process::Stdio;
use std::time::{Duration, Instant};

use callingest::config::{DatabaseConfig, Secret};
use callingest::partners::create_partner;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::Connection;
use tokio::process::Command;

use crate::helpers::instances::{free_port, Instance};
use crate::helpers::{
    batch, item_with_id, run_alone, wait_for, wait_until, TestApp, ADMIN_TOKEN, BATCH_PATH,
};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// An item whose recording is on a closed loopback port: the call is accepted and listed, its
/// download fails without leaving the machine.
fn local_item(id: &str) -> Value {
    let mut item = item_with_id(id);
    item["call"]["recording_url"] = json!(format!("http://127.0.0.1:{}/r.wav", free_port()));
    item
}

async fn get_json(client: &reqwest::Client, url: String, headers: &[(&str, &str)]) -> Value {
    let mut request = client.get(&url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{url}");
    response.json().await.unwrap()
}

/// `/readyz` once it says the replica serves reads.
fn serving(ready: Value) -> Result<Value, String> {
    if ready["replica"]["serving_reads"] == json!(true) {
        Ok(ready)
    } else {
        Err(ready.to_string())
    }
}

fn listed(page: &Value) -> Vec<String> {
    page["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|call| call["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The value of `name{labels}` in a Prometheus text page, 0 when absent.
fn metric(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_read_url_on_the_same_server_serves_the_listings_end_to_end() {
    let app = TestApp::builder()
        .role(callingest::config::Role::All)
        .read_from_itself()
        .spawn()
        .await;
    let partner = [
        ("x-partner-id", app.partner.partner_id.as_str()),
        ("x-api-key", app.partner.api_key.as_str()),
    ];
    // The read node is a primary: as current as it gets, so it serves reads once measured.
    let measured = &app;
    let ready = wait_for(
        "the replica to serve reads",
        Duration::from_secs(10),
        || async move {
            let ready = get_json(&measured.client, measured.url("/readyz"), &[]).await;
            serving(ready)
        },
    )
    .await;
    assert!(
        ready["replica"]["lag_seconds"].as_f64().unwrap() < 1.0,
        "{ready}"
    );

    let answer = app
        .submit(&batch(vec![
            local_item("replica-1"),
            local_item("replica-2"),
        ]))
        .await;
    assert!(answer.success, "{answer:?}");
    let batch_id = answer.batch_id.parse().expect("a batch id");

    // Projected by the service's own projector, listed through the replica path.
    let (reader, partner_headers) = (&app, &partner);
    wait_for(
        "both calls to be listed",
        Duration::from_secs(10),
        || async move {
            let page = get_json(
                &reader.client,
                reader.url("/api/v1/partner/calls"),
                partner_headers,
            )
            .await;
            if listed(&page).len() == 2 {
                Ok(())
            } else {
                Err(page.to_string())
            }
        },
    )
    .await;
    let call = app.get_call("replica-1").await;
    assert_eq!(call.id, "replica-1", "{call:?}");
    let found = app.get_batch(batch_id).await;
    assert_eq!(found.call_count, 2, "{found:?}");
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let search = get_json(
        &app.client,
        app.url("/api/v1/admin/calls?partner_id=partner-a"),
        &[("authorization", bearer.as_str())],
    )
    .await;
    assert_eq!(listed(&search).len(), 2, "{search}");

    // The support page reads through the same path.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = client
        .post(app.url("/support/login"))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    let cookie = login.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let page = client
        .get(app.url("/support?partner=partner-a&call=replica-2"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("CallAccepted"), "{page}");

    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metric(
            &metrics,
            "callingest_replica_reads_total{outcome=\"replica\"}"
        ) >= 4.0,
        "{metrics}"
    );
    assert!(
        metrics.contains("callingest_database_replica_lag_seconds "),
        "{metrics}"
    );
}

/// A primary and a streaming standby of it, in a temporary directory, stopped when dropped.
struct StreamingPair {
    dir: tempfile::TempDir,
    as_postgres: bool,
    primary_port: u16,
    standby_port: u16,
}

impl StreamingPair {
    async fn start() -> Self {
        let uid = Command::new("id").arg("-u").output().await.unwrap();
        let as_postgres = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        let dir = tempfile::Builder::new()
            .prefix("callingest-replica-")
            .tempdir()
            .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let pair = Self {
            dir,
            as_postgres,
            primary_port: free_port(),
            standby_port: free_port(),
        };
        let primary = pair.path("primary");
        pair.run(&[
            "initdb",
            "-D",
            &primary,
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
        ])
        .await;
        pair.pg_ctl_start("primary", pair.primary_port).await;
        let standby = pair.path("standby");
        pair.run(&[
            "pg_basebackup",
            "-h",
            "127.0.0.1",
            "-p",
            &pair.primary_port.to_string(),
            "-U",
            "postgres",
            "-D",
            &standby,
            "-R",
            "-X",
            "stream",
        ])
        .await;
        pair.pg_ctl_start("standby", pair.standby_port).await;
        pair
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    fn command(&self, args: &[&str]) -> Command {
        let program = format!("{PG_BIN}/{}", args[0]);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--", &program]);
            command
        } else {
            Command::new(&program)
        };
        command
            .args(&args[1..])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    async fn run(&self, args: &[&str]) {
        let output = self.command(args).output().await.unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    async fn pg_ctl_start(&self, name: &str, port: u16) {
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.dir.path().display()
        );
        let (data, log) = (self.path(name), self.path(&format!("{name}.log")));
        self.run(&[
            "pg_ctl", "-D", &data, "-l", &log, "-o", &options, "-w", "start",
        ])
        .await;
    }

    fn url(&self, port: u16, query: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{port}/callingest{query}")
    }

    /// Pauses (`true`) or resumes WAL replay on the standby.
    async fn pause_replay(&self, pause: bool) {
        let mut conn = sqlx::PgConnection::connect(&format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.standby_port
        ))
        .await
        .unwrap();
        let call = if pause {
            "select pg_wal_replay_pause()"
        } else {
            "select pg_wal_replay_resume()"
        };
        sqlx::query(call).execute(&mut conn).await.unwrap();
    }

    async fn stop(&self, name: &str) {
        let data = self.path(name);
        self.run(&["pg_ctl", "-D", &data, "-m", "immediate", "-w", "stop"])
            .await;
    }
}

impl Drop for StreamingPair {
    fn drop(&mut self) {
        for name in ["standby", "primary"] {
            let data = self.path(name);
            let program = format!("{PG_BIN}/pg_ctl");
            let mut command = if self.as_postgres {
                let mut command = std::process::Command::new("runuser");
                command.args(["-u", "postgres", "--", &program]);
                command
            } else {
                std::process::Command::new(&program)
            };
            let _ = command
                .args(["-D", &data, "-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}

/// `/readyz`'s replica object.
async fn replica_state(client: &reqwest::Client, service: &Instance) -> Value {
    get_json(client, service.url("/readyz"), &[]).await["replica"].clone()
}

#[tokio::test]
#[ignore = "starts a PostgreSQL primary and a streaming standby, so .ci/run runs it apart: scripts/test --test api -- --ignored"]
async fn a_streaming_replica_serves_listings_within_the_lag_allowed_and_hands_over_to_the_primary()
{
    let _alone = run_alone().await;
    let pair = StreamingPair::start().await;
    let max_lag = Duration::from_secs(8);
    // The primary first in the read list: `prefer-standby` must still pick the standby.
    let read_url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/callingest?target_session_attrs=prefer-standby",
        pair.primary_port, pair.standby_port
    );
    let service = Instance::start(
        &pair.url(pair.primary_port, ""),
        "all",
        &[
            ("DATABASE_READ_URL", &read_url),
            (
                "CALLINGEST_DB_READ_MAX_LAG_MS",
                &max_lag.as_millis().to_string(),
            ),
            ("CALLINGEST_ALLOW_PRIVATE_URLS", "true"),
            ("CALLINGEST_FETCH_MAX_ATTEMPTS", "1"),
        ],
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    service.wait_ready(&client).await;
    let pool = callingest::db::connect(&DatabaseConfig {
        url: Secret::new(pair.url(pair.primary_port, "")),
        max_connections: 2,
        acquire_timeout: Duration::from_secs(10),
        connect_deadline: Duration::from_secs(10),
        master_key: Some(Secret::new(crate::helpers::TEST_MASTER_KEY)),
        previous_master_key: None,
    })
    .await
    .unwrap();
    let partner = create_partner(&pool, "partner-a", None, 100_000)
        .await
        .unwrap();
    let headers = [
        ("x-partner-id", "partner-a"),
        ("x-api-key", partner.api_key.as_str()),
    ];
    let submit = |id: &'static str| {
        let (client, url, key) = (
            client.clone(),
            service.url(BATCH_PATH),
            partner.api_key.clone(),
        );
        async move {
            let answer: Value = client
                .post(url)
                .header("x-partner-id", "partner-a")
                .header("x-api-key", key)
                .header("x-tenant-id", "t")
                .header("x-sub-tenant-id", "s")
                .json(&batch(vec![local_item(id)]))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(answer["success"], json!(true), "{answer}");
            answer["batch_id"].as_str().unwrap().to_owned()
        }
    };
    let list = || get_json(&client, service.url("/api/v1/partner/calls"), &headers);

    // The standby is found (after the primary, in the list), measured and serving.
    let (client_ref, service_ref) = (&client, &service);
    let standby_lag = || async move {
        let replica = replica_state(client_ref, service_ref).await;
        if replica["serving_reads"] == json!(true) {
            Ok(replica["lag_seconds"].as_f64().unwrap())
        } else {
            Err(replica.to_string())
        }
    };
    let caught_up = wait_for("the standby to serve", Duration::from_secs(30), standby_lag).await;
    submit("before-pause").await;
    let listing = |id: &'static str| {
        let list = &list;
        move || async move {
            let page = list().await;
            if listed(&page).contains(&id.to_owned()) {
                Ok(())
            } else {
                Err(page.to_string())
            }
        }
    };
    wait_for(
        "before-pause to be listed from the standby",
        Duration::from_secs(20),
        listing("before-pause"),
    )
    .await;

    // Replay paused: the standby's view stops at this moment.
    pair.pause_replay(true).await;
    let paused = Instant::now();
    let batch_id = submit("after-pause").await;
    // On the primary the call is projected...
    let primary = &pool;
    wait_until(
        "after-pause to be projected on the primary",
        Duration::from_secs(10),
        || async move {
            sqlx::query_scalar(
                "select exists (select 1 from call
                                where partner_id = 'partner-a' and call_id = 'after-pause')",
            )
            .fetch_one(primary)
            .await
            .unwrap()
        },
    )
    .await;
    // ...the partner gets it by id (primary) and its batch (not on the standby: the primary)...
    let call = get_json(
        &client,
        service.url("/api/v1/partner/calls/after-pause"),
        &headers,
    )
    .await;
    assert_eq!(call["id"], json!("after-pause"), "{call}");
    let found = get_json(
        &client,
        service.url(&format!("/api/v1/partner/batches/{batch_id}")),
        &headers,
    )
    .await;
    assert_eq!(found["call_count"], json!(1), "{found}");
    // ...while the list, served by the standby within the lag allowed, does not show it yet.
    let stale = listed(&list().await);
    assert!(
        paused.elapsed() < max_lag - Duration::from_secs(2),
        "too slow to tell the standby from the primary ({:?}); the machine is overloaded",
        paused.elapsed()
    );
    assert!(
        stale.contains(&"before-pause".to_owned()) && !stale.contains(&"after-pause".to_owned()),
        "the list should come from the paused standby: {stale:?}"
    );

    // Past the lag allowed, the list goes to the primary and shows the call.
    wait_for(
        "the primary to take over the list",
        (paused + max_lag + Duration::from_secs(10)).saturating_duration_since(Instant::now()),
        listing("after-pause"),
    )
    .await;
    // Not before the lag allowed had (nearly) passed: the standby had caught up with a moment
    // at most a check or two before the pause.
    let handed_over = paused.elapsed();
    assert!(
        handed_over >= max_lag - Duration::from_secs(3),
        "{handed_over:?}"
    );
    let replica = replica_state(&client, &service).await;
    assert_eq!(replica["serving_reads"], json!(false), "{replica}");
    assert!(
        replica["lag_seconds"].as_f64().unwrap() > max_lag.as_secs_f64(),
        "{replica}"
    );
    let metrics = client
        .get(service.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The gauge is set at each measurement, once a second.
    assert!(
        metric(&metrics, "callingest_database_replica_lag_seconds") > max_lag.as_secs_f64() - 1.5,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "callingest_database_replica_lag_bytes") > 0.0,
        "{metrics}"
    );
    for outcome in ["replica", "not_found", "lagging"] {
        let series = format!("callingest_replica_reads_total{{outcome=\"{outcome}\"}}");
        assert!(metric(&metrics, &series) >= 1.0, "{series}: {metrics}");
    }

    // Replay resumed: the standby catches up and serves again.
    pair.pause_replay(false).await;
    let resumed = Instant::now();
    let lag_again = wait_for(
        "the standby to serve again",
        Duration::from_secs(20),
        standby_lag,
    )
    .await;
    let back_after = resumed.elapsed();
    assert!(listed(&list().await).contains(&"after-pause".to_owned()));

    // The standby down: the list is still answered, from the primary.
    pair.stop("standby").await;
    for _ in 0..5 {
        let page = list().await;
        assert!(listed(&page).contains(&"after-pause".to_owned()), "{page}");
    }
    println!(
        "replica test: lag when serving {caught_up:.2} s, list handed to the primary {:.1} s after replay paused (max lag {} s), standby serving again {:.1} s after replay resumed (lag {lag_again:.2} s)",
        handed_over.as_secs_f64(),
        max_lag.as_secs(),
        back_after.as_secs_f64()
    );
    pool.close().await;
    drop(service);
    drop(pair);
}
