//! Instances of the real `callingest` binary for tests that need separate processes (several
//! instances on one database, an instance started before its database). Each listens on its
//! own free port on 127.0.0.1 and is killed when dropped.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::drain::wait_until;

pub struct Instance {
    child: Child,
    pub address: String,
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Instance {
    /// `callingest serve` with `role` on `database_url`, plus `env`. Its logs go to the test's
    /// stderr when `TEST_LOG` is set.
    pub fn start(database_url: &str, role: &str, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let logs = if std::env::var_os("TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        let child = Command::new(env!("CARGO_BIN_EXE_callingest"))
            .env("CALLINGEST_MASTER_KEY", super::TEST_MASTER_KEY)
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("CALLINGEST_LISTEN", format!("127.0.0.1:{port}"))
            .env("CALLINGEST_ROLE", role)
            .env("CALLINGEST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(logs)
            .spawn()
            .expect("callingest starts");
        Self {
            child,
            address: format!("http://127.0.0.1:{port}"),
        }
    }

    /// The process id, to read its `/proc` figures.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Waits until `path` answers `status` (panics after `within`).
    pub async fn wait_for(
        &self,
        client: &reqwest::Client,
        path: &str,
        status: u16,
        within: Duration,
    ) {
        let url = self.url(path);
        let url = &url;
        wait_until(
            &format!("{path} of {} to answer {status}", self.address),
            within,
            || async move {
                client
                    .get(url)
                    .send()
                    .await
                    .is_ok_and(|response| response.status() == status)
            },
        )
        .await;
    }

    pub async fn wait_ready(&self, client: &reqwest::Client) {
        self.wait_for(client, "/readyz", 200, Duration::from_secs(60))
            .await;
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
