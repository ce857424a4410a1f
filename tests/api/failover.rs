//! A PostgreSQL failover under load, with the real engine: a pg_auto_failover formation
//! (monitor, primary, secondary on 127.0.0.1, installed by `scripts/ensure-pg-auto-failover`
//! when missing) and the real `callingest` binary given the formation's multi-host URL. While
//! partners submit calls with recordings and callbacks, `pg_autoctl perform failover` runs twice
//! (there and back). Every answer must be 200 or 503, a 200 must come again within 30 s of each
//! failover without restarting callingest, and every call answered 200 must be in the event log
//! once, processed once, called back, and projected.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callingest::config::{DatabaseConfig, Secret};
use callingest::partners::create_partner;
use serde_json::json;
use sqlx::Connection;
use tokio::process::Command;

use crate::helpers::callback_receiver::{Receiver, Reply, TestCa};
use crate::helpers::drain::drain_database;
use crate::helpers::instances::{free_port, Instance};
use crate::helpers::recording_server::RecordingServer;
use crate::helpers::{
    assert_each_call_logged_processed_and_called_back_once, batch, item_with_id, run_alone,
    test_privacy, wait_for, BATCH_PATH,
};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A monitor and two nodes, in a temporary directory, stopped and removed when dropped.
struct Formation {
    dir: tempfile::TempDir,
    pg_autoctl: String,
    /// Root runs the nodes as `postgres` (PostgreSQL refuses to run as root).
    as_postgres: bool,
    monitor_port: u16,
    node_ports: [u16; 2],
    keepers: Vec<tokio::process::Child>,
}

impl Formation {
    async fn start() -> Self {
        let ensured = Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/ensure-pg-auto-failover"
        ))
        .output()
        .await
        .expect("scripts/ensure-pg-auto-failover runs");
        assert!(
            ensured.status.success(),
            "ensure-pg-auto-failover: {}",
            String::from_utf8_lossy(&ensured.stderr)
        );
        let pg_autoctl = String::from_utf8(ensured.stdout).unwrap().trim().to_owned();
        let uid = Command::new("id").arg("-u").output().await.unwrap();
        let as_postgres = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        let dir = tempfile::Builder::new()
            .prefix("callingest-failover-")
            .tempdir()
            .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let mut formation = Self {
            dir,
            pg_autoctl,
            as_postgres,
            monitor_port: free_port(),
            node_ports: [free_port(), free_port()],
            keepers: Vec::new(),
        };
        let run = formation.path("run");
        formation
            .command(["mkdir", "-p", run.as_str()])
            .status()
            .await
            .unwrap();

        let monitor = formation.path("monitor");
        let monitor_port = formation.monitor_port.to_string();
        formation.spawn(
            "monitor",
            &[
                "create",
                "monitor",
                "--pgdata",
                &monitor,
                "--pgport",
                &monitor_port,
                "--hostname",
                "127.0.0.1",
                "--auth",
                "trust",
                "--no-ssl",
                "--run",
            ],
        );
        formation.wait_for_monitor().await;
        for (i, port) in formation.node_ports.into_iter().enumerate() {
            let name = format!("node{}", i + 1);
            let pgdata = formation.path(&name);
            let monitor_uri = formation.monitor_uri();
            formation.spawn(
                &name,
                &[
                    "create",
                    "postgres",
                    "--pgdata",
                    &pgdata,
                    "--pgport",
                    &port.to_string(),
                    "--hostname",
                    "127.0.0.1",
                    "--name",
                    &name,
                    "--auth",
                    "trust",
                    "--no-ssl",
                    "--monitor",
                    &monitor_uri,
                    "--run",
                ],
            );
            // One after the other: the first is the primary (alone: `single`).
            if i == 0 {
                formation.wait_for_states(&[("single", "single")], 1).await;
            }
        }
        formation
            .wait_for_states(&[("primary", "primary"), ("secondary", "secondary")], 2)
            .await;
        formation
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    fn monitor_uri(&self) -> String {
        format!(
            "postgres://autoctl_node@127.0.0.1:{}/pg_auto_failover?sslmode=disable",
            self.monitor_port
        )
    }

    /// The formation URI callingest is given (as `pg_autoctl show uri` prints it), with the
    /// database and user of the test.
    fn uri(&self, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/{database}?target_session_attrs=read-write&sslmode=disable",
            self.node_ports[0], self.node_ports[1]
        )
    }

    /// `args` as the user that runs the nodes, with pg_autoctl's files kept in the temp dir.
    fn command<'a>(&self, args: impl IntoIterator<Item = &'a str>) -> Command {
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--", "env"]);
            command
        } else {
            Command::new("env")
        };
        command
            .arg(format!("PATH={PG_BIN}:/usr/bin:/bin"))
            .arg(format!("XDG_CONFIG_HOME={}", self.path("config")))
            .arg(format!("XDG_DATA_HOME={}", self.path("data")))
            .arg(format!("XDG_RUNTIME_DIR={}", self.path("run")))
            .args(args)
            .stdin(std::process::Stdio::null());
        command
    }

    fn spawn(&mut self, name: &str, args: &[&str]) {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).unwrap();
        let child = self
            .command(std::iter::once(self.pg_autoctl.clone().as_str()).chain(args.iter().copied()))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("pg_autoctl starts");
        self.keepers.push(child);
    }

    async fn wait_for_monitor(&self) {
        wait_for(
            "the monitor to start",
            Duration::from_secs(60),
            || async move {
                match self.node_states().await {
                    Some(_) => Ok(()),
                    None => Err(self.logs()),
                }
            },
        )
        .await;
    }

    /// `(reported, goal)` state of each node, in node order; `None` while the monitor is down.
    async fn node_states(&self) -> Option<Vec<(String, String)>> {
        let mut conn = sqlx::PgConnection::connect(&self.monitor_uri())
            .await
            .ok()?;
        sqlx::query_as(
            "select reportedstate::text, goalstate::text from pgautofailover.node order by nodeid",
        )
        .fetch_all(&mut conn)
        .await
        .ok()
    }

    /// Waits until the nodes report `expected` (the first `count` nodes).
    async fn wait_for_states(&self, expected: &[(&str, &str)], count: usize) {
        wait_for(
            "the formation's states",
            Duration::from_secs(120),
            || async move {
                let states = self.node_states().await.unwrap_or_default();
                let stable = states.len() == count
                    && expected
                        .iter()
                        .all(|(r, g)| states.iter().any(|(sr, sg)| sr == r && sg == g));
                if stable {
                    Ok(())
                } else {
                    Err(format!(
                        "not in {expected:?} but {states:?}: {}",
                        self.logs()
                    ))
                }
            },
        )
        .await;
    }

    /// `pg_autoctl perform failover`, which returns once the new primary is in place.
    async fn fail_over(&self) {
        let monitor = self.path("monitor");
        let output = self
            .command([
                self.pg_autoctl.as_str(),
                "perform",
                "failover",
                "--pgdata",
                &monitor,
            ])
            .output()
            .await
            .unwrap();
        assert!(
            output.status.success(),
            "perform failover: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        self.wait_for_states(&[("primary", "primary"), ("secondary", "secondary")], 2)
            .await;
    }

    fn logs(&self) -> String {
        ["monitor", "node1", "node2"]
            .iter()
            .map(|name| {
                let log = std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                format!(
                    "--- {name}\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Formation {
    /// A failed test still stops its keepers (which stop their PostgreSQL): killing the
    /// spawned `runuser` would leave them running.
    fn drop(&mut self) {
        for name in ["node2", "node1", "monitor"] {
            let pgdata = self.path(name);
            let mut command = if self.as_postgres {
                let mut command = std::process::Command::new("runuser");
                command.args(["-u", "postgres", "--", "env"]);
                command
            } else {
                std::process::Command::new("env")
            };
            let _ = command
                .arg(format!("PATH={PG_BIN}:/usr/bin:/bin"))
                .arg(format!("XDG_CONFIG_HOME={}", self.path("config")))
                .arg(format!("XDG_DATA_HOME={}", self.path("data")))
                .arg(format!("XDG_RUNTIME_DIR={}", self.path("run")))
                .args([
                    self.pg_autoctl.as_str(),
                    "stop",
                    "--immediate",
                    "--pgdata",
                    &pgdata,
                ])
                .output();
        }
        // Until the keepers are gone, PostgreSQL may still write into the directory.
        for keeper in &mut self.keepers {
            for _ in 0..100 {
                if !matches!(keeper.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Every answer of the load: when it came and its status (0: no HTTP answer).
type Answers = Arc<Mutex<Vec<(Instant, u16)>>>;

#[tokio::test]
#[ignore = "runs a pg_auto_failover formation for minutes, so .ci/run runs it apart: scripts/test --test api -- --ignored"]
async fn a_failover_under_load_answers_503_at_worst_and_loses_nothing() {
    let _alone = run_alone().await;
    let formation = Formation::start().await;
    let ca = TestCa::new();
    let receiver = Receiver::start(&ca, vec![Reply::Status(200)]).await;
    let recordings = RecordingServer::start().await;
    let recording_url = recordings.url("/files/silence.wav");
    let database_url = formation.uri("callingest");
    let ca_file = ca.ca_file().to_str().unwrap().to_owned();
    let service = Instance::start(
        &database_url,
        "all",
        &[
            ("CALLINGEST_ALLOW_PRIVATE_URLS", "true"),
            ("CALLINGEST_EXTRA_CA_FILE", &ca_file),
            ("CALLINGEST_FETCH_BACKOFF_BASE_MS", "100"),
            ("CALLINGEST_CALLBACK_BACKOFF_BASE_MS", "200"),
            ("CALLINGEST_CALLBACK_TIMEOUT_MS", "3000"),
        ],
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    service.wait_ready(&client).await;
    // The test's own pool takes the same multi-host URL, through the same code.
    let pool = callingest::db::connect(&DatabaseConfig {
        url: Secret::new(database_url.clone()),
        max_connections: 4,
        acquire_timeout: std::time::Duration::from_secs(30),
        connect_deadline: std::time::Duration::from_secs(30),
        master_key: Some(Secret::new(crate::helpers::TEST_MASTER_KEY)),
        previous_master_key: None,
    })
    .await
    .unwrap();
    let partner = create_partner(&pool, "partner-a", None, 1_000_000)
        .await
        .unwrap();
    let readiness: serde_json::Value = client
        .get(service.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        readiness["database"],
        json!({"primary": true, "synchronous_commit": true}),
        "pg_auto_failover makes commits wait for the standby: {readiness}"
    );

    // 4 clients, batches of 5, a short pause between batches: a steady load, not a flood.
    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
    let answers: Answers = Arc::default();
    let running = Arc::new(AtomicBool::new(true));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (client, accepted, answers, running) = (
            client.clone(),
            accepted.clone(),
            answers.clone(),
            running.clone(),
        );
        let (url, key, recording_url, callback_url) = (
            service.url(BATCH_PATH),
            partner.api_key.clone(),
            recording_url.clone(),
            receiver.url(),
        );
        clients.push(tokio::spawn(async move {
            let mut n = 0;
            while running.load(Ordering::SeqCst) {
                let ids: Vec<String> = (0..5).map(|i| format!("c{c}-{n}-{i}")).collect();
                n += 1;
                let items = ids
                    .iter()
                    .map(|id| {
                        let mut item = item_with_id(id);
                        item["call"]["recording_url"] = json!(recording_url);
                        item["callback_url"] = json!(callback_url);
                        item
                    })
                    .collect();
                let response = client
                    .post(&url)
                    .header("x-partner-id", "partner-a")
                    .header("x-api-key", &key)
                    .header("x-tenant-id", "t")
                    .header("x-sub-tenant-id", "s")
                    .json(&batch(items))
                    .send()
                    .await;
                let status = response.as_ref().map_or(0, |r| r.status().as_u16());
                if status == 503 {
                    let retry_after = response.as_ref().unwrap().headers().get("retry-after");
                    assert!(retry_after.is_some(), "a 503 without Retry-After");
                }
                answers.lock().unwrap().push((Instant::now(), status));
                if status == 200 {
                    accepted.lock().unwrap().extend(ids);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }

    // Five seconds of load before the first failover.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut failovers = Vec::new();
    // Two by default (there and back); `FAILOVER_TEST_ROUNDS` runs more to hunt rare faults.
    let rounds: usize = std::env::var("FAILOVER_TEST_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2);
    for _ in 0..rounds {
        let started = Instant::now();
        formation.fail_over().await;
        failovers.push(started);
        // A 200 again within 30 s of the failover, from the same process.
        let (answers_ref, formation_ref) = (&answers, &formation);
        wait_for(
            "a 200 within 30 s after the failover",
            Duration::from_secs(30),
            || async move {
                let done = Instant::now();
                let answered =
                    answers_ref.lock().unwrap().iter().any(|(at, status)| {
                        *at > done - Duration::from_millis(500) && *status == 200
                    });
                if answered {
                    Ok(())
                } else {
                    Err(formation_ref.logs())
                }
            },
        )
        .await;
        // Five seconds of load after each failover.
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    running.store(false, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }

    let answers = answers.lock().unwrap().clone();
    let mut by_status: HashMap<u16, usize> = HashMap::new();
    for (_, status) in &answers {
        *by_status.entry(*status).or_default() += 1;
    }
    assert!(
        by_status.keys().all(|status| [200, 503].contains(status)),
        "answers other than 200 and 503: {by_status:?}"
    );
    // The longest time without a 200, from the first failover on.
    let mut oks: Vec<Instant> = answers
        .iter()
        .filter(|(_, status)| *status == 200)
        .map(|(at, _)| *at)
        .collect();
    oks.sort();
    let longest = oks
        .windows(2)
        .map(|pair| pair[1] - pair[0])
        .max()
        .unwrap_or_default();

    let accepted = accepted.lock().unwrap().clone();
    let ids: Vec<String> = accepted.iter().map(|c| format!("partner-a:{c}")).collect();
    // Let the service finish processing, delivering and projecting (the drain lists the queue
    // rows and projections still pending if it does not): the 120 s the deliveries had, plus
    // the 60 s the projections had after them.
    drain_database(&pool, &test_privacy(), Duration::from_secs(180)).await;
    let delivered: i64 = sqlx::query_scalar(
        "select count(distinct aggregate_id) from events
         where event_type = 'CallbackDelivered' and aggregate_id = any($1)",
    )
    .bind(&ids)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        delivered as usize,
        accepted.len(),
        "callbacks delivered of the calls accepted"
    );
    assert_each_call_logged_processed_and_called_back_once(&pool, "partner-a", &accepted).await;
    // No call's history has a hole: every event was appended on the state its writer read,
    // never on a read of a node that was failing over.
    let holes: Vec<(String, Vec<i64>)> = sqlx::query_as(
        "select aggregate_id, array_agg(sequence order by sequence) from events
         group by aggregate_type, aggregate_id having max(sequence) <> count(*) limit 5",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(holes.is_empty(), "histories with holes: {holes:?}");
    // The projections caught up (drained above): the call table has every call, finished.
    let projected: i64 = sqlx::query_scalar(
        "select count(*) from call where partner_id = 'partner-a' and call_id = any($1)
           and status in ('completed', 'failed')",
    )
    .bind(&accepted)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        projected as usize,
        accepted.len(),
        "calls projected as finished of the calls accepted"
    );
    let retried: Vec<(String, String, i64)> = sqlx::query_as(
        "select event_type, coalesce(payload->event_type->>'error', ''), count(*) from events
         where event_type in ('CallbackAttemptFailed', 'RecordingFetchFailed', 'CallbackAbandoned')
         group by 1, 2 order by 1, 2",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    println!(
        "failover test: {} calls accepted, answers {by_status:?}, {rounds} failovers, longest time without a 200: {:.1} s; failed attempts: {retried:?}",
        accepted.len(),
        longest.as_secs_f64()
    );
    pool.close().await;
    drop(service);
    drop(formation);
}
