//! A PostgreSQL database per test, created on the server of `DATABASE_URL` and dropped with
//! the test.

use sqlx::postgres::PgConnectOptions;
use sqlx::ConnectOptions;

/// The PostgreSQL server tests use: `DATABASE_URL`, or the local default.
pub fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database that exists for one test and is dropped with it.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
    server: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        Self::create_on(&server_url()).await
    }

    /// A database on the PostgreSQL server at `server_url`.
    pub async fn create_on(server_url: &str) -> Self {
        let server: PgConnectOptions = server_url.parse().expect("the server URL parses");
        let name = format!("callingest_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = server
            .clone()
            .database("postgres")
            .connect()
            .await
            .expect("connect to PostgreSQL");
        sqlx::query(&format!("create database \"{name}\""))
            .execute(&mut admin)
            .await
            .unwrap();
        let url = server.database(&name).to_url_lossy().to_string();
        Self {
            name,
            url,
            server: server_url.to_owned(),
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (name, server) = (self.name.clone(), self.server.clone());
        // Drop runs outside async context: use a thread with its own small runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let server: PgConnectOptions = server.parse().unwrap();
                if let Ok(mut admin) = server.database("postgres").connect().await {
                    let _ =
                        sqlx::query(&format!("drop database if exists \"{name}\" with (force)"))
                            .execute(&mut admin)
                            .await;
                }
            });
        })
        .join();
    }
}
