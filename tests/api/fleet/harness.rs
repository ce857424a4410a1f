//! A fleet of real `callingest` processes on one test database, as an operator runs it: API
//! and worker instances started from the built binary with `CALLINGEST_ROLE`, each on its own
//! loopback port and with its log (stderr) in a file of the test's temporary directory. A
//! loopback recording server (which can delay its answers, keeping downloads in flight) and an
//! HTTPS callback receiver trusted through a test CA stand in for the partners' hosts.
//!
//! When a test panics, every instance prints the tail of its log as it is dropped, so a failure
//! shows what each process was doing.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use callingest::partners::{create_partner, PartnerCredentials};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::callback_receiver::{Receiver, Reply, TestCa};
use crate::helpers::recording_server::RecordingServer;
use crate::helpers::{batch, item_with_id, wait_for, TestDatabase, BATCH_PATH};

/// Lines of an instance's log printed when a test fails.
const LOG_TAIL_LINES: usize = 60;

/// How long an instance may take to answer `/readyz` 200 after it was started.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// The shared parts of a fleet: the database, the partners' hosts, the logs.
pub struct Fleet {
    /// The test's own connection to the fleet's database (migrated by `callingest migrate`).
    pub pool: PgPool,
    pub client: reqwest::Client,
    pub recordings: RecordingServer,
    pub receiver: Receiver,
    ca: TestCa,
    logs: tempfile::TempDir,
    spool: tempfile::TempDir,
    /// Dropped last: instances and the pool must be gone before the database is dropped.
    database: TestDatabase,
}

impl Fleet {
    /// A fresh, migrated database; a recording server; a receiver answering every callback
    /// 200.
    pub async fn start() -> Fleet {
        let database = TestDatabase::create().await;
        let ca = TestCa::new();
        let receiver = Receiver::start(&ca, vec![Reply::Status(200)]).await;
        let recordings = RecordingServer::start().await;
        let logs = tempfile::Builder::new()
            .prefix("callingest-fleet-logs-")
            .tempdir()
            .unwrap();
        let spool = tempfile::Builder::new()
            .prefix("callingest-fleet-spool-")
            .tempdir()
            .unwrap();

        // Migrate once with the binary itself, so instances started together do not race on it.
        let log = logs.path().join("migrate.log");
        let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_callingest"))
            .env("CALLINGEST_MASTER_KEY", crate::helpers::TEST_MASTER_KEY)
            .arg("migrate")
            .env("DATABASE_URL", &database.url)
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .status()
            .await
            .expect("callingest migrate runs");
        assert!(
            status.success(),
            "callingest migrate failed ({status}):\n{}",
            tail(&log, LOG_TAIL_LINES)
        );

        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect(&database.url)
            .await
            .expect("connect to the fleet's database");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Fleet {
            pool,
            client,
            recordings,
            receiver,
            ca,
            logs,
            spool,
            database,
        }
    }

    /// An instance of `role` (`api` or `worker`) on a free loopback port, not started yet.
    /// Everything is left at its default except what loopback hosts need.
    pub fn instance(&self, name: &str, role: &str) -> Instance {
        let port = free_port();
        let env = vec![
            ("DATABASE_URL", self.database.url.clone()),
            ("CALLINGEST_ROLE", role.to_owned()),
            ("CALLINGEST_LISTEN", format!("127.0.0.1:{port}")),
            // The recording server and the receiver are on 127.0.0.1.
            ("CALLINGEST_ALLOW_PRIVATE_URLS", "true".to_owned()),
            (
                "CALLINGEST_EXTRA_CA_FILE",
                self.ca.ca_file().to_str().unwrap().to_owned(),
            ),
            (
                "CALLINGEST_SPOOL_DIR",
                self.spool.path().to_str().unwrap().to_owned(),
            ),
            ("CALLINGEST_LOG", "info,sqlx=warn".to_owned()),
            // Plain log files.
            ("NO_COLOR", "1".to_owned()),
        ];
        Instance {
            name: name.to_owned(),
            address: format!("http://127.0.0.1:{port}"),
            env: env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            log: self.logs.path().join(format!("{name}.log")),
            child: None,
            pids: Vec::new(),
        }
    }

    /// An instance of `role`, started and ready.
    pub async fn started(&self, name: &str, role: &str) -> Instance {
        let mut instance = self.instance(name, role);
        instance.start();
        instance.wait_ready(&self.client).await;
        instance
    }

    pub async fn partner(
        &self,
        partner_id: &str,
        rate_limit_per_minute: u32,
    ) -> PartnerCredentials {
        create_partner(&self.pool, partner_id, None, rate_limit_per_minute)
            .await
            .expect("partner created")
    }

    /// A call fetching `recording_path` from the recording server, with its callback to the
    /// receiver.
    pub fn call(&self, call_id: &str, recording_path: &str) -> Value {
        let mut item = item_with_id(call_id);
        item["call"]["recording_url"] = json!(self.recordings.url(recording_path));
        item["callback_url"] = json!(self.receiver.url());
        item
    }

    /// POSTs one batch to `api` as `partner`; returns the response.
    pub async fn post_batch(
        &self,
        api: &Instance,
        partner: &PartnerCredentials,
        items: Vec<Value>,
    ) -> reqwest::Response {
        self.client
            .post(format!("{}{BATCH_PATH}", api.address))
            .header("x-partner-id", &partner.partner_id)
            .header("x-api-key", &partner.api_key)
            .header("x-tenant-id", "tenant1")
            .header("x-sub-tenant-id", "subtenant1")
            .json(&batch(items))
            .send()
            .await
            .expect("the API answers")
    }

    /// Submits calls `{prefix}{0..n}` of `partner` fetching `recording_path`, in batches of 50,
    /// each answered 200. Returns their aggregate ids (`partner:call`).
    pub async fn submit(
        &self,
        api: &Instance,
        partner: &PartnerCredentials,
        prefix: &str,
        n: usize,
        recording_path: &str,
    ) -> Vec<String> {
        let ids: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
        for chunk in ids.chunks(50) {
            let items = chunk
                .iter()
                .map(|id| self.call(id, recording_path))
                .collect();
            let response = self.post_batch(api, partner, items).await;
            let status = response.status();
            assert_eq!(status, 200, "{}", response.text().await.unwrap_or_default());
        }
        ids.iter()
            .map(|id| format!("{}:{id}", partner.partner_id))
            .collect()
    }

    /// How many of `calls` (aggregate ids) have an event of one of `event_types`.
    pub async fn count_with_event(&self, calls: &[String], event_types: &[&str]) -> usize {
        let count: i64 = sqlx::query_scalar(
            "select count(distinct aggregate_id) from events
             where aggregate_type = 'Call' and aggregate_id = any($1) and event_type = any($2)",
        )
        .bind(calls)
        .bind(event_types)
        .fetch_one(&self.pool)
        .await
        .unwrap();
        count as usize
    }

    /// Waits until every call of `calls` has an event of one of `event_types`; panics after
    /// `within` saying how many had one. Returns the time it took.
    pub async fn wait_for_all(
        &self,
        calls: &[String],
        event_types: &[&str],
        within: Duration,
    ) -> Duration {
        let started = Instant::now();
        loop {
            let done = self.count_with_event(calls, event_types).await;
            if done == calls.len() {
                return started.elapsed();
            }
            if started.elapsed() >= within {
                panic!(
                    "only {done} of {} calls have {event_types:?} after {within:?}\n{}",
                    calls.len(),
                    self.diagnosis().await
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// What may explain a stall: how far each projection is behind the log, the job rows and
    /// their leases, and the cluster's transactions that hold back the projectors' snapshot.
    pub async fn diagnosis(&self) -> String {
        let lag: Vec<(String, i64, i64)> = sqlx::query_as(
            "select name, global_position, (select coalesce(max(global_position), 0) from events)
             from projection_checkpoint order by name",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap_or_default();
        let jobs: Vec<(String, String, i64)> = sqlx::query_as(
            "select stage, coalesce(lease_owner, '-'), count(*) from processing_job
             group by 1, 2 order by 1, 2",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap_or_default();
        let transactions: Vec<(String, String, f64, String)> = sqlx::query_as(
            "select coalesce(datname, ''), coalesce(state, ''),
                    coalesce(extract(epoch from now() - xact_start)::float8, 0),
                    coalesce(left(query, 120), '')
             from pg_stat_activity
             where (backend_xid is not null or backend_xmin is not null)
               and pid <> pg_backend_pid()
             order by xact_start limit 10",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap_or_default();
        format!(
            "projections (name, checkpoint, last event): {lag:?}\n\
             processing jobs (stage, lease owner, rows): {jobs:?}\n\
             oldest transactions in the cluster (database, state, age s, query): {transactions:?}"
        )
    }

    /// Each call's events counted by type.
    pub async fn event_counts(&self, calls: &[String]) -> HashMap<String, HashMap<String, i64>> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "select aggregate_id, event_type, count(*) from events
             where aggregate_type = 'Call' and aggregate_id = any($1)
             group by aggregate_id, event_type",
        )
        .bind(calls)
        .fetch_all(&self.pool)
        .await
        .unwrap();
        let mut counts: HashMap<String, HashMap<String, i64>> = HashMap::new();
        for (call, event_type, count) in rows {
            counts.entry(call).or_default().insert(event_type, count);
        }
        counts
    }

    /// Asserts that every call was accepted once and completed exactly once (never failed),
    /// and, with `delivered`, that its callback was delivered exactly once.
    pub async fn assert_processed_exactly_once(&self, calls: &[String], delivered: bool) {
        let counts = self.event_counts(calls).await;
        for call in calls {
            let events = counts
                .get(call)
                .unwrap_or_else(|| panic!("{call} has no events"));
            let count = |t: &str| events.get(t).copied().unwrap_or(0);
            assert_eq!(count("CallAccepted"), 1, "{call}: {events:?}");
            assert_eq!(
                (count("ProcessingCompleted"), count("ProcessingFailed")),
                (1, 0),
                "{call} not completed exactly once: {events:?}"
            );
            if delivered {
                assert_eq!(count("CallbackDelivered"), 1, "{call}: {events:?}");
            }
        }
    }

    /// The calls whose processing job `instance` holds right now: claimed by one of its workers
    /// (the lease owner names its process id) and not expired.
    pub async fn jobs_held_by(&self, instance: &Instance) -> Vec<String> {
        self.jobs_held_by_process(instance.pid()).await
    }

    /// The processing jobs whose unexpired lease names process `pid`.
    pub async fn jobs_held_by_process(&self, pid: u32) -> Vec<String> {
        sqlx::query_scalar(
            "select call_aggregate_id from processing_job
             where lease_until > now() and lease_owner ~ $1",
        )
        .bind(names_process(&[pid]))
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    /// Of the jobs process `pid` holds, those whose call has not finished processing (a
    /// finished call's row may keep its lease until the projector removes the row).
    pub async fn unfinished_jobs_held_by_process(&self, pid: u32) -> Vec<String> {
        sqlx::query_scalar(
            "select j.call_aggregate_id from processing_job j
             where j.lease_until > now() and j.lease_owner ~ $1
               and not exists (
                   select from events e
                   where e.aggregate_type = 'Call' and e.aggregate_id = j.call_aggregate_id
                     and e.event_type in ('ProcessingCompleted', 'ProcessingFailed'))",
        )
        .bind(names_process(&[pid]))
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    /// Of `calls`, those whose `event_type` event was recorded by `instance` (in any of its
    /// runs): the event's metadata `worker` names its process id.
    pub async fn recorded_by(
        &self,
        instance: &Instance,
        calls: &[String],
        event_type: &str,
    ) -> Vec<String> {
        sqlx::query_scalar(
            "select distinct aggregate_id from events
             where aggregate_type = 'Call' and aggregate_id = any($1) and event_type = $2
               and metadata ->> 'worker' ~ $3",
        )
        .bind(calls)
        .bind(event_type)
        .bind(names_process(&instance.pids))
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    /// Waits (bounded) until `instance` holds at least `n` processing jobs; returns them.
    pub async fn wait_until_holding(&self, instance: &Instance, n: usize) -> Vec<String> {
        wait_for(
            &format!("{} to hold at least {n} processing jobs", instance.name),
            Duration::from_secs(30),
            || async move {
                let held = self.jobs_held_by(instance).await;
                if held.len() >= n {
                    Ok(held)
                } else {
                    Err(format!("it holds {held:?}"))
                }
            },
        )
        .await
    }

    /// Asserts the receiver saw a delivery for every call of `calls`, under its webhook-id.
    pub fn assert_receiver_saw(&self, calls: &[String]) {
        let seen: HashSet<String> = self
            .receiver
            .requests()
            .iter()
            .filter_map(|r| r.header("webhook-id").map(str::to_owned))
            .collect();
        let missing: Vec<&String> = calls
            .iter()
            .filter(|call| !seen.contains(&callingest::callbacks::webhook_id(call)))
            .collect();
        assert!(
            missing.is_empty(),
            "the receiver never saw the webhook-id of {} calls, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
    }
}

/// One `callingest serve` process. Dropping it kills the process (printing the tail of its log
/// first if the test is failing).
pub struct Instance {
    pub name: String,
    /// `http://127.0.0.1:PORT`, where it serves `/healthz`, `/readyz`, `/metrics` (and the API).
    pub address: String,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    /// The process id of every run, the current one last.
    pids: Vec<u32>,
}

impl Instance {
    /// Starts the process (again, after a stop), its stderr appended to its log file.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        writeln!(log, "===== {} started by the test =====", self.name).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_callingest"))
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CALLINGEST_MASTER_KEY", crate::helpers::TEST_MASTER_KEY)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("callingest starts");
        self.pids.push(child.id());
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not running", self.name))
            .id()
    }

    /// Waits until `/readyz` answers 200; panics with the log's tail otherwise.
    pub async fn wait_ready(&mut self, client: &reqwest::Client) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "{} exited ({status}) before it was ready:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            let ready = client
                .get(format!("{}/readyz", self.address))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(
                started.elapsed() < READY_WITHIN,
                "{}: /readyz not 200 within {READY_WITHIN:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The process id of the current run, or of the last one once it has stopped.
    pub fn last_pid(&self) -> u32 {
        *self.pids.last().expect("started at least once")
    }

    /// SIGKILL: no shutdown code runs, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, as a deploy sends; waits for the exit (at most `within`, then SIGKILL and
    /// panic). Returns the exit status and how long the process took to exit.
    pub async fn terminate(&mut self, within: Duration) -> (ExitStatus, Duration) {
        let pid = self.pid();
        let sent = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {pid} failed");
        loop {
            let child = self.child.as_mut().unwrap();
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return (status, sent.elapsed());
            }
            if sent.elapsed() > within {
                self.kill();
                panic!(
                    "{} still running {within:?} after SIGTERM:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last lines of this instance's log (all its runs).
    pub fn log_tail(&self) -> String {
        tail(&self.log, LOG_TAIL_LINES)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "----- last lines of {}'s log ({}) -----\n{}",
                self.name,
                self.log.display(),
                self.log_tail()
            );
        }
    }
}

/// A regular expression matching a worker name that contains one of `pids` as a whole number
/// (`worker-1234-0` names process 1234, not 123).
fn names_process(pids: &[u32]) -> String {
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    format!("(^|[^0-9])({})([^0-9]|$)", pids.join("|"))
}

fn tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A loopback port free right now (the instance binds it a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
