//! A recording host on 127.0.0.1 serving the audio fixtures of `audio/tests/fixtures`, with
//! routes that misbehave on purpose (errors, hangs, delays, redirects, oversize bodies).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::Path;
use poem::{get, handler, EndpointExt, Response, Route, Server};

/// The audio files the server serves under `/files/`.
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/audio/tests/fixtures");

/// A recording host on 127.0.0.1 that counts every request it gets.
pub struct RecordingServer {
    base: String,
    pub hits: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct ServerState {
    flaky: Arc<AtomicUsize>,
    hang_once: Arc<AtomicUsize>,
    delayed_once: Arc<AtomicUsize>,
    port: u16,
}

fn read_fixture(name: &str) -> Response {
    match std::fs::read(format!("{FIXTURES}/{name}")) {
        Ok(bytes) => Response::builder()
            .content_type("application/octet-stream")
            .body(bytes),
        Err(_) => Response::builder()
            .status(poem::http::StatusCode::NOT_FOUND)
            .finish(),
    }
}

#[handler]
fn fixture(Path(name): Path<String>) -> Response {
    read_fixture(&name)
}

/// Answers 500 twice, then the file.
#[handler]
fn flaky(Path(name): Path<String>, state: poem::web::Data<&ServerState>) -> Response {
    if state.flaky.fetch_add(1, Ordering::SeqCst) < 2 {
        return Response::builder()
            .status(poem::http::StatusCode::INTERNAL_SERVER_ERROR)
            .finish();
    }
    read_fixture(&name)
}

/// The first request never gets an answer (its worker is killed meanwhile); later ones do.
#[handler]
async fn hang_once(Path(name): Path<String>, state: poem::web::Data<&ServerState>) -> Response {
    if state.hang_once.fetch_add(1, Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    read_fixture(&name)
}

/// Answers with the file after `ms` milliseconds (a slow host, or one that keeps a worker busy).
#[handler]
async fn delayed(Path((ms, name)): Path<(u64, String)>) -> Response {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    read_fixture(&name)
}

/// The first request waits `ms` milliseconds before its answer; later ones are answered at once.
#[handler]
async fn delayed_once(
    Path((ms, name)): Path<(u64, String)>,
    state: poem::web::Data<&ServerState>,
) -> Response {
    if state.delayed_once.fetch_add(1, Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    read_fixture(&name)
}

#[handler]
async fn slow() -> Response {
    tokio::time::sleep(Duration::from_secs(30)).await;
    Response::builder().body("late")
}

#[handler]
fn big() -> Vec<u8> {
    vec![0u8; 200_000]
}

#[handler]
fn redirect(state: poem::web::Data<&ServerState>) -> Response {
    Response::builder()
        .status(poem::http::StatusCode::FOUND)
        .header(
            "location",
            format!("http://127.0.0.1:{}/files/left-only.wav", state.port),
        )
        .finish()
}

impl RecordingServer {
    pub async fn start() -> Self {
        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .unwrap();
        let port = acceptor.local_addr()[0].as_socket_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let state = ServerState {
            flaky: Arc::new(AtomicUsize::new(0)),
            hang_once: Arc::new(AtomicUsize::new(0)),
            delayed_once: Arc::new(AtomicUsize::new(0)),
            port,
        };
        let counter = hits.clone();
        let app = Route::new()
            .at("/files/:name", get(fixture))
            .at("/flaky/:name", get(flaky))
            .at("/hang-once/:name", get(hang_once))
            .at("/delay/:ms/:name", get(delayed))
            .at("/delay-once/:ms/:name", get(delayed_once))
            .at("/slow.wav", get(slow))
            .at("/big.wav", get(big))
            .at("/redirect.wav", get(redirect))
            .data(state)
            .before(move |req| {
                counter.fetch_add(1, Ordering::SeqCst);
                async move { Ok(req) }
            });
        tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
        Self {
            base: format!("http://127.0.0.1:{port}"),
            hits,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// A recording host on 127.0.0.1 serving files held in memory (synthesised speech, hostile
/// WAVs) at `/r/{name}`, counting every request it gets.
pub struct MemoryRecordings {
    base: String,
    pub hits: Arc<AtomicUsize>,
}

#[handler]
fn from_memory(
    Path(name): Path<String>,
    files: poem::web::Data<&Arc<std::collections::HashMap<String, Vec<u8>>>>,
) -> Response {
    match files.get(&name) {
        Some(bytes) => Response::builder()
            .content_type("application/octet-stream")
            .body(bytes.clone()),
        None => Response::builder()
            .status(poem::http::StatusCode::NOT_FOUND)
            .finish(),
    }
}

impl MemoryRecordings {
    /// Serves `files` (name → bytes).
    pub async fn start(files: impl IntoIterator<Item = (String, Vec<u8>)>) -> Self {
        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .unwrap();
        let port = acceptor.local_addr()[0].as_socket_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let files: std::collections::HashMap<String, Vec<u8>> = files.into_iter().collect();
        let app = Route::new()
            .at("/r/:name", get(from_memory))
            .data(Arc::new(files))
            .before(move |req| {
                counter.fetch_add(1, Ordering::SeqCst);
                async move { Ok(req) }
            });
        tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
        Self {
            base: format!("http://127.0.0.1:{port}"),
            hits,
        }
    }

    /// The URL of the file `name`.
    pub fn url(&self, name: &str) -> String {
        format!("{}/r/{name}", self.base)
    }
}
