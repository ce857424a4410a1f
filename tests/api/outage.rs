//! The database goes away under load and comes back. On a PostgreSQL cluster this test starts
//! for itself (never the shared server): while it is down the API answers 503 with the JSON
//! error shape, promptly, and `/readyz` is red; once it is back everything works again without
//! restarting callingest, and no call that was answered 200 is missing.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{batch, item_with_id, wait_until, TestApp};

/// A throwaway cluster: `initdb` in a temporary directory, listening on 127.0.0.1 only.
struct PrivateCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivateCluster {
    fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries in /usr/lib/postgresql (scripts/ensure-postgres installs them)")
            .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
            .filter(|bin| bin.join("pg_ctl").exists())
            .max()
            .expect("a PostgreSQL version with pg_ctl");
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Self { bin, dir, port };
        if is_root() {
            // PostgreSQL refuses to run as root: the cluster belongs to `postgres`.
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(cluster.dir.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let initdb = cluster.bin.join("initdb");
        let data = cluster.dir.path().to_str().unwrap().to_owned();
        cluster.run(
            &initdb,
            &["-D", &data, "-U", "postgres", "-A", "trust", "--no-sync"],
        );
        cluster.pg_ctl_start();
        cluster
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn run(&self, program: &std::path::Path, args: &[&str]) {
        let output = if is_root() {
            Command::new("runuser")
                .arg("-u")
                .arg("postgres")
                .arg("--")
                .arg(program)
                .args(args)
                .output()
        } else {
            Command::new(program).args(args).output()
        }
        .unwrap();
        assert!(
            output.status.success(),
            "{}: {}",
            program.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn pg_ctl_start(&self) {
        let data = self.dir.path().to_str().unwrap().to_owned();
        let log = format!("{data}/server.log");
        let options = format!("-c listen_addresses=127.0.0.1 -p {} -k {data}", self.port);
        self.run(
            &self.bin.join("pg_ctl"),
            &["-D", &data, "-l", &log, "-o", &options, "-w", "start"],
        );
    }

    fn pg_ctl_stop(&self) {
        let data = self.dir.path().to_str().unwrap().to_owned();
        self.run(
            &self.bin.join("pg_ctl"),
            &["-D", &data, "-m", "fast", "-w", "stop"],
        );
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let data = self.dir.path().to_str().unwrap().to_owned();
        let pg_ctl = self.bin.join("pg_ctl");
        let _ = if is_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&pg_ctl)
                .args(["-D", &data, "-m", "immediate", "stop"])
                .output()
        } else {
            Command::new(&pg_ctl)
                .args(["-D", &data, "-m", "immediate", "stop"])
                .output()
        };
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// `(status, call ids, seconds taken)` of every batch the load sent.
type Answers = Arc<Mutex<Vec<(u16, Vec<String>, f64)>>>;

#[tokio::test]
async fn a_database_outage_answers_503_promptly_and_recovers_without_losing_accepted_calls() {
    let cluster = PrivateCluster::start();
    let app = TestApp::builder()
        .server_url(&cluster.url())
        .rate_limit(1_000_000)
        .spawn()
        .await;
    let app = Arc::new(app);
    let answers: Answers = Arc::default();
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let load = {
        let (app, answers, running) = (app.clone(), answers.clone(), running.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while running.load(std::sync::atomic::Ordering::SeqCst) {
                let ids: Vec<String> = (0..5).map(|i| format!("load-{n}-{i}")).collect();
                let started = Instant::now();
                let response = app
                    .post_batch(&batch(ids.iter().map(|id| item_with_id(id)).collect()))
                    .await;
                let status = response.status().as_u16();
                if status != 200 {
                    let body: Value = response.json().await.expect("a JSON error body");
                    assert_eq!(body["success"], false, "{body}");
                }
                answers
                    .lock()
                    .unwrap()
                    .push((status, ids, started.elapsed().as_secs_f64()));
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // A second of load before the outage.
    tokio::time::sleep(Duration::from_secs(1)).await;

    cluster.pg_ctl_stop();
    let down_since = Instant::now();
    let mut red = false;
    // Ten seconds of outage, /readyz sampled twice a second.
    while down_since.elapsed() < Duration::from_secs(10) {
        let response = app.client.get(app.url("/readyz")).send().await.unwrap();
        if response.status() == 503 {
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["success"], false);
            red = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(red, "/readyz never went red while the database was down");
    cluster.pg_ctl_start();
    let ready = &app;
    wait_until(
        "/readyz to recover",
        Duration::from_secs(30),
        || async move {
            let response = ready.client.get(ready.url("/readyz")).send().await;
            response.unwrap().status() == 200
        },
    )
    .await;
    // The load goes on for a while after the recovery: its answers must be 200 again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    running.store(false, std::sync::atomic::Ordering::SeqCst);
    load.await.unwrap();

    let answers = answers.lock().unwrap().clone();
    let statuses: std::collections::BTreeSet<u16> = answers.iter().map(|a| a.0).collect();
    assert!(
        statuses.iter().all(|s| [200, 503].contains(s)),
        "statuses {statuses:?}"
    );
    assert!(statuses.contains(&503), "no 503 during the outage");
    assert_eq!(
        answers.last().unwrap().0,
        200,
        "still failing after recovery"
    );
    let slowest = answers.iter().map(|a| a.2).fold(0.0, f64::max);
    assert!(slowest < 4.0, "a request hung for {slowest:.1} s");
    let accepted: Vec<String> = answers
        .iter()
        .filter(|a| a.0 == 200)
        .flat_map(|a| a.1.clone())
        .collect();
    let ids: Vec<String> = accepted
        .iter()
        .map(|id| format!("partner-a:{id}"))
        .collect();
    let stored: i64 = sqlx::query_scalar(
        "select count(*) from events where event_type = 'CallAccepted' and aggregate_id = any($1)",
    )
    .bind(&ids)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        stored as usize,
        accepted.len(),
        "a call answered 200 is missing"
    );
}
