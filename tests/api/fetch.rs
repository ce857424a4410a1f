//! Recording downloads against real HTTP servers on loopback. No database needed.
//!
//! Every server here listens on 127.0.0.1 or [::1]; refusals are proven by servers that
//! record zero requests, never by connecting anywhere else.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use callingest::processing::fetch::{FetchError, FetchSettings, Fetcher};
use poem::endpoint::make;
use poem::http::StatusCode;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::Path;
use poem::{get, handler, Body, EndpointExt, Response, Route, Server};
use sha2::{Digest, Sha256};

/// A server on a free loopback port that counts the requests it receives.
struct TestServer {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl TestServer {
    async fn start(bind: &str, route: Route) -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let app = route.before(move |request| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move { Ok(request) }
        });
        let acceptor = TcpListener::bind(bind)
            .into_acceptor()
            .await
            .expect("bind a loopback port");
        let addr = *acceptor.local_addr()[0]
            .as_socket_addr()
            .expect("a TCP address");
        tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
        Self { addr, hits }
    }

    async fn on_ipv4(route: Route) -> Self {
        Self::start("127.0.0.1:0", route).await
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn config(allow_private: bool) -> FetchSettings {
    FetchSettings {
        max_bytes: 1024 * 1024,
        connect_timeout: Duration::from_secs(2),
        total_timeout: Duration::from_secs(5),
        allow_private,
        extra_ca_file: None,
    }
}

fn fetcher(config: FetchSettings) -> Fetcher {
    Fetcher::new(config).expect("the fetcher builds")
}

/// A body that is not all one byte, so a hash or offset mistake shows.
fn recording_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn status(code: StatusCode) -> Response {
    Response::builder().status(code).finish()
}

fn redirect_to(location: String) -> Response {
    Response::builder()
        .status(StatusCode::FOUND)
        .header("location", location)
        .finish()
}

#[handler]
fn recording() -> Response {
    Response::builder()
        .content_type("audio/wav")
        .body(recording_bytes(100_000))
}

/// `/hop/n` redirects to `/hop/n-1`; `/hop/0` is the recording.
#[handler]
fn hop(Path(n): Path<u32>) -> Response {
    if n == 0 {
        Response::builder().body("arrived")
    } else {
        redirect_to(format!("/hop/{}", n - 1))
    }
}

fn recording_server_route() -> Route {
    Route::new().at("/recording", get(recording))
}

#[tokio::test]
async fn a_recording_is_streamed_to_a_file_with_its_size_hash_and_header() {
    let server = TestServer::on_ipv4(recording_server_route()).await;

    let fetched = fetcher(config(true))
        .fetch(&server.url("/recording?token=secret"))
        .await
        .expect("the recording downloads");

    let expected = recording_bytes(100_000);
    assert_eq!(fetched.bytes, 100_000);
    assert_eq!(fetched.sha256, hex::encode(Sha256::digest(&expected)));
    assert_eq!(fetched.content_type.as_deref(), Some("audio/wav"));
    assert_eq!(fetched.header, expected[..64]);
    assert_eq!(std::fs::read(fetched.file.path()).unwrap(), expected);
}

#[tokio::test]
async fn an_empty_recording_has_an_empty_header() {
    let route = Route::new().at("/empty", make(|_| async { Response::builder().body("") }));
    let server = TestServer::on_ipv4(route).await;

    let fetched = fetcher(config(true))
        .fetch(&server.url("/empty"))
        .await
        .unwrap();

    assert_eq!(fetched.bytes, 0);
    assert!(fetched.header.is_empty());
    assert_eq!(
        fetched.sha256,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[tokio::test]
async fn a_404_is_a_permanent_failure_that_names_the_status() {
    let route = Route::new().at("/gone", make(|_| async { status(StatusCode::NOT_FOUND) }));
    let server = TestServer::on_ipv4(route).await;

    let error = fetcher(config(true))
        .fetch(&server.url("/gone"))
        .await
        .unwrap_err();

    assert!(matches!(error, FetchError::Rejected { status } if status == 404));
    assert!(!error.is_retryable());
    assert_eq!(error.to_string(), "recording URL answered 404 Not Found");
}

#[tokio::test]
async fn a_500_is_retryable() {
    let route = Route::new().at(
        "/broken",
        make(|_| async { status(StatusCode::INTERNAL_SERVER_ERROR) }),
    );
    let server = TestServer::on_ipv4(route).await;

    let error = fetcher(config(true))
        .fetch(&server.url("/broken"))
        .await
        .unwrap_err();

    assert!(matches!(error, FetchError::ServerError { .. }), "{error:?}");
    assert!(error.is_retryable());
    assert_eq!(
        error.to_string(),
        "recording URL answered 500 Internal Server Error"
    );
}

#[tokio::test]
async fn a_429_is_retryable_and_exposes_retry_after() {
    let route = Route::new().at(
        "/busy",
        make(|_| async {
            Response::builder()
                .status(StatusCode::TOO_MANY_REQUESTS)
                .header("retry-after", "120")
                .finish()
        }),
    );
    let server = TestServer::on_ipv4(route).await;

    let error = fetcher(config(true))
        .fetch(&server.url("/busy"))
        .await
        .unwrap_err();

    assert!(error.is_retryable());
    assert_eq!(error.retry_after(), Some(Duration::from_secs(120)));
    assert_eq!(
        error.to_string(),
        "recording URL answered 429 Too Many Requests (retry after 120 s)"
    );
}

#[tokio::test]
async fn a_server_slower_than_the_total_timeout_is_a_retryable_timeout() {
    let route = Route::new().at(
        "/slow",
        make(|_| async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Response::builder().body("late")
        }),
    );
    let server = TestServer::on_ipv4(route).await;
    let fetcher = fetcher(FetchSettings {
        total_timeout: Duration::from_millis(300),
        ..config(true)
    });

    let started = Instant::now();
    let error = fetcher.fetch(&server.url("/slow")).await.unwrap_err();

    assert!(matches!(error, FetchError::Timeout), "{error:?}");
    assert!(error.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_body_that_trickles_past_the_total_timeout_is_a_retryable_timeout() {
    let route = Route::new().at(
        "/trickle",
        make(|_| async {
            let chunks = futures_util::stream::unfold(0u32, |sent| async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                (sent < 50).then(|| (Ok::<_, std::io::Error>(vec![0u8; 10]), sent + 1))
            });
            Response::builder().body(Body::from_bytes_stream(chunks))
        }),
    );
    let server = TestServer::on_ipv4(route).await;
    let fetcher = fetcher(FetchSettings {
        total_timeout: Duration::from_millis(300),
        ..config(true)
    });

    let started = Instant::now();
    let error = fetcher.fetch(&server.url("/trickle")).await.unwrap_err();

    assert!(matches!(error, FetchError::Timeout), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_content_length_above_the_limit_is_refused_before_reading() {
    let server = TestServer::on_ipv4(recording_server_route()).await;
    let fetcher = fetcher(FetchSettings {
        max_bytes: 99_999,
        ..config(true)
    });

    let error = fetcher.fetch(&server.url("/recording")).await.unwrap_err();

    assert!(matches!(error, FetchError::TooLarge { max_bytes: 99_999 }));
    assert!(!error.is_retryable());
    assert_eq!(error.to_string(), "recording is larger than 99999 bytes");
}

#[tokio::test]
async fn a_recording_of_exactly_the_limit_is_accepted() {
    let server = TestServer::on_ipv4(recording_server_route()).await;
    let fetcher = fetcher(FetchSettings {
        max_bytes: 100_000,
        ..config(true)
    });

    let fetched = fetcher.fetch(&server.url("/recording")).await.unwrap();

    assert_eq!(fetched.bytes, 100_000);
}

#[tokio::test]
async fn a_chunked_body_without_content_length_is_cut_off_at_the_limit() {
    let route = Route::new().at(
        "/chunked",
        make(|_| async {
            let chunks =
                futures_util::stream::iter((0..4).map(|_| Ok::<_, std::io::Error>(vec![7u8; 500])));
            Response::builder().body(Body::from_bytes_stream(chunks))
        }),
    );
    let server = TestServer::on_ipv4(route).await;
    let fetcher = fetcher(FetchSettings {
        max_bytes: 1_000,
        ..config(true)
    });

    let error = fetcher.fetch(&server.url("/chunked")).await.unwrap_err();

    assert!(
        matches!(error, FetchError::TooLarge { max_bytes: 1_000 }),
        "{error:?}"
    );
}

#[tokio::test]
async fn five_redirects_are_followed_and_a_sixth_is_refused() {
    let server = TestServer::on_ipv4(Route::new().at("/hop/:n", get(hop))).await;
    let fetcher = fetcher(config(true));

    let fetched = fetcher.fetch(&server.url("/hop/5")).await.unwrap();
    assert_eq!(fetched.bytes, "arrived".len() as u64);

    let error = fetcher.fetch(&server.url("/hop/6")).await.unwrap_err();
    assert!(
        matches!(error, FetchError::TooManyRedirects { max: 5 }),
        "{error:?}"
    );
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn a_redirect_to_another_loopback_port_is_followed_when_private_addresses_are_allowed() {
    let target = TestServer::on_ipv4(recording_server_route()).await;
    let location = target.url("/recording");
    let first = TestServer::on_ipv4(Route::new().at(
        "/go",
        make(move |_| {
            let location = location.clone();
            async move { redirect_to(location) }
        }),
    ))
    .await;

    let fetched = fetcher(config(true))
        .fetch(&first.url("/go"))
        .await
        .unwrap();

    assert_eq!(fetched.bytes, 100_000);
    assert_eq!((first.hits(), target.hits()), (1, 1));
}

#[tokio::test]
async fn a_redirect_does_not_pass_the_presigned_query_on_as_a_referer() {
    let target = TestServer::on_ipv4(Route::new().at(
        "/echo-referer",
        make(|request: poem::Request| async move {
            let referer = request.header("referer").unwrap_or("no referer").to_owned();
            Response::builder().body(referer)
        }),
    ))
    .await;
    let location = target.url("/echo-referer");
    let first = TestServer::on_ipv4(Route::new().at(
        "/go",
        make(move |_| {
            let location = location.clone();
            async move { redirect_to(location) }
        }),
    ))
    .await;

    let fetched = fetcher(config(true))
        .fetch(&first.url("/go?X-Amz-Signature=secret"))
        .await
        .unwrap();

    assert_eq!(std::fs::read(fetched.file.path()).unwrap(), b"no referer");
}

/// Every spelling of a loopback destination must be refused before any request is sent.
async fn assert_refused_without_a_hit(server: &TestServer, url: &str) {
    let error = fetcher(config(false)).fetch(url).await.unwrap_err();
    assert!(
        matches!(error, FetchError::ForbiddenAddress),
        "{url}: {error:?}"
    );
    assert!(!error.is_retryable());
    assert_eq!(
        error.to_string(),
        "recording URL points to a private or loopback address"
    );
    assert_eq!(server.hits(), 0, "{url} reached the server");
}

#[tokio::test]
async fn loopback_urls_in_every_spelling_are_refused_without_reaching_the_server() {
    let server = TestServer::on_ipv4(recording_server_route()).await;
    let port = server.port();

    for url in [
        format!("http://127.0.0.1:{port}/recording"),
        format!("http://localhost:{port}/recording"),
        format!("http://2130706433:{port}/recording"),
        format!("http://127.1:{port}/recording"),
        format!("http://0x7f.1:{port}/recording"),
        format!("http://[::ffff:127.0.0.1]:{port}/recording"),
    ] {
        assert_refused_without_a_hit(&server, &url).await;
    }
}

#[tokio::test]
async fn an_ipv6_loopback_url_is_refused_without_reaching_the_server() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: this host cannot bind [::1]");
        return;
    }
    let server = TestServer::start("[::1]:0", recording_server_route()).await;

    assert_refused_without_a_hit(&server, &server.url("/recording")).await;
    assert_refused_without_a_hit(
        &server,
        &format!("http://localhost:{}/recording", server.port()),
    )
    .await;
}

#[tokio::test]
async fn a_redirect_from_an_allowed_host_to_a_loopback_address_is_refused() {
    let forbidden = TestServer::on_ipv4(recording_server_route()).await;
    let by_ip = forbidden.url("/recording");
    let by_name = format!("http://localhost:{}/recording", forbidden.port());
    let first = TestServer::on_ipv4(
        Route::new()
            .at(
                "/to-ip",
                make(move |_| {
                    let location = by_ip.clone();
                    async move { redirect_to(location) }
                }),
            )
            .at(
                "/to-name",
                make(move |_| {
                    let location = by_name.clone();
                    async move { redirect_to(location) }
                }),
            ),
    )
    .await;
    // Only the first hop's port is let through, standing in for a public host.
    let fetcher = Fetcher::with_test_loopback_ports(config(false), vec![first.port()]).unwrap();

    for path in ["/to-ip", "/to-name"] {
        let error = fetcher.fetch(&first.url(path)).await.unwrap_err();
        assert!(
            matches!(error, FetchError::ForbiddenAddress),
            "{path}: {error:?}"
        );
    }

    assert_eq!(first.hits(), 2);
    assert_eq!(forbidden.hits(), 0);
}

#[tokio::test]
async fn a_redirect_to_another_scheme_is_refused() {
    let first = TestServer::on_ipv4(
        Route::new()
            .at(
                "/to-ftp",
                make(|_| async { redirect_to("ftp://example.com/r.wav".to_owned()) }),
            )
            .at(
                "/to-file",
                make(|_| async { redirect_to("file:///etc/passwd".to_owned()) }),
            ),
    )
    .await;
    let fetcher = fetcher(config(true));

    let to_ftp = fetcher.fetch(&first.url("/to-ftp")).await.unwrap_err();
    let to_file = fetcher.fetch(&first.url("/to-file")).await.unwrap_err();

    assert!(
        matches!(to_ftp, FetchError::UnsupportedScheme { ref scheme } if scheme == "ftp"),
        "{to_ftp:?}"
    );
    // The client cannot even form a request for a URL without a host, so it hands back the 302.
    assert_eq!(
        to_file.to_string(),
        "recording URL answered 302 Found with a redirect that cannot be followed"
    );
    assert!(!to_ftp.is_retryable() && !to_file.is_retryable());
}

#[tokio::test]
async fn a_refused_connection_is_retryable_and_its_message_hides_the_query() {
    // A port that was free a moment ago: nothing listens there now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    let error = fetcher(config(true))
        .fetch(&format!(
            "http://user:pw@127.0.0.1:{port}/r.wav?token=secret"
        ))
        .await
        .unwrap_err();

    assert!(matches!(error, FetchError::Connect { .. }), "{error:?}");
    assert!(error.is_retryable());
    assert_eq!(
        error.to_string(),
        format!("could not connect to the recording URL http://127.0.0.1:{port}/r.wav")
    );
}
