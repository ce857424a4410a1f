//! The callback receiver fixture (`helpers::callback_receiver`) tested on its own: scripted
//! replies, TLS with the test CA, keep-alive and redirects, with plain clients and the service's
//! outbound client. No database needed.

use std::time::{Duration, Instant};

use callingest::net::{ClientOptions, OutboundClient, OutboundPolicy};
use reqwest::redirect::Policy;
use reqwest::{Method, StatusCode};

use crate::helpers::callback_receiver::{Receiver, Reply, TestCa};

const WAIT: Duration = Duration::from_secs(10);

/// A plain reqwest client that trusts the test CA read from its file, and nothing else
/// special.
fn client_trusting(ca: &TestCa) -> reqwest::Client {
    let pem = std::fs::read(ca.ca_file()).expect("read the CA file");
    reqwest::Client::builder()
        .use_rustls_tls()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("a PEM certificate"))
        .redirect(Policy::none())
        .timeout(WAIT)
        .build()
        .unwrap()
}

async fn post(client: &reqwest::Client, url: &str, body: &str) -> reqwest::Response {
    client
        .post(url)
        .header("content-type", "application/json")
        .header("Webhook-Id", "msg_1")
        .body(body.to_owned())
        .send()
        .await
        .expect("the receiver answers")
}

#[tokio::test]
async fn scripted_replies_come_back_in_order_and_the_last_one_repeats() {
    let ca = TestCa::new();
    let receiver = Receiver::start(&ca, vec![Reply::Status(500), Reply::Status(200)]).await;
    let client = client_trusting(&ca);

    let mut statuses = Vec::new();
    for attempt in 0..3 {
        let body = format!(r#"{{"call_id":"call123","attempt":{attempt}}}"#);
        statuses.push(post(&client, &receiver.url(), &body).await.status());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::OK,
            StatusCode::OK
        ]
    );

    let requests = receiver.wait_for_requests(3, WAIT).await;
    assert_eq!(requests.len(), 3);
    for (attempt, request) in requests.iter().enumerate() {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/hook");
        assert_eq!(request.header("webhook-id"), Some("msg_1"));
        assert_eq!(request.header("WEBHOOK-ID"), Some("msg_1"));
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert!(request
            .headers
            .iter()
            .all(|(name, _)| *name == name.to_lowercase()));
        assert_eq!(request.json()["call_id"], "call123");
        assert_eq!(request.json()["attempt"], attempt);
    }
    assert!(requests
        .windows(2)
        .all(|pair| pair[0].received_at <= pair[1].received_at));
}

#[tokio::test]
async fn a_delayed_reply_comes_after_its_delay_and_outlasts_a_short_client_timeout() {
    let ca = TestCa::new();
    let delay = Duration::from_millis(400);
    let receiver = Receiver::start(&ca, vec![Reply::Delayed(delay, 204)]).await;

    let started = Instant::now();
    let response = post(&client_trusting(&ca), &receiver.url(), "{}").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(
        started.elapsed() >= delay,
        "answered after {:?}",
        started.elapsed()
    );

    let impatient = reqwest::Client::builder()
        .use_rustls_tls()
        .no_proxy()
        .add_root_certificate(
            reqwest::Certificate::from_pem(ca.certificate_pem().as_bytes()).unwrap(),
        )
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let error = impatient
        .post(receiver.url())
        .body("{}")
        .send()
        .await
        .expect_err("the client gives up first");
    assert!(error.is_timeout(), "{error:?}");
    // The request itself got through; only the answer was late.
    assert_eq!(receiver.wait_for_requests(2, WAIT).await.len(), 2);
}

#[tokio::test]
async fn replies_with_headers_and_redirects_carry_their_headers() {
    let ca = TestCa::new();
    let receiver = Receiver::start(
        &ca,
        vec![
            Reply::StatusWithHeaders(429, vec![("retry-after".into(), "2".into())]),
            Reply::Redirect("https://127.0.0.1:9/elsewhere".into()),
        ],
    )
    .await;
    let client = client_trusting(&ca);

    let limited = post(&client, &receiver.url(), "{}").await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()["retry-after"], "2");

    let redirected = post(&client, &receiver.url(), "{}").await;
    assert_eq!(redirected.status(), StatusCode::FOUND);
    assert_eq!(
        redirected.headers()["location"],
        "https://127.0.0.1:9/elsewhere"
    );
}

#[tokio::test]
async fn a_client_without_the_test_ca_fails_the_tls_handshake() {
    let ca = TestCa::new();
    let receiver = Receiver::start(&ca, vec![Reply::Status(200)]).await;
    let stranger = reqwest::Client::builder()
        .use_rustls_tls()
        .no_proxy()
        .timeout(WAIT)
        .build()
        .unwrap();

    let error = stranger
        .post(receiver.url())
        .body("{}")
        .send()
        .await
        .expect_err("an unknown issuer is refused");
    assert!(error.is_connect(), "{error:?}");
    assert!(
        format!("{error:?}").contains("UnknownIssuer"),
        "not a certificate error: {error:?}"
    );
    // A certificate from another test CA is no better.
    let other_ca = TestCa::new();
    let error = client_trusting(&other_ca)
        .post(receiver.url())
        .body("{}")
        .send()
        .await
        .expect_err("a different CA is refused");
    assert!(error.is_connect(), "{error:?}");

    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(receiver.requests().is_empty());
}

#[tokio::test]
async fn the_certificate_also_names_localhost() {
    let ca = TestCa::new();
    let receiver = Receiver::start(&ca, vec![Reply::Status(200)]).await;
    // Pinned to the receiver's address, so nothing is resolved or reached elsewhere.
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .no_proxy()
        .add_root_certificate(
            reqwest::Certificate::from_pem(ca.certificate_pem().as_bytes()).unwrap(),
        )
        .resolve("localhost", receiver.addr())
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/hook", receiver.port());
    assert_eq!(post(&client, &url, "{}").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_chunked_body_is_recorded_whole() {
    let ca = TestCa::new();
    let receiver = Receiver::start(&ca, vec![Reply::Status(200)]).await;
    let chunks: Vec<Result<&'static str, std::io::Error>> =
        vec![Ok(r#"{"call_id":"#), Ok(r#""chunked","#), Ok(r#""n":1}"#)];
    let response = client_trusting(&ca)
        .post(receiver.url())
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let request = &receiver.wait_for_requests(1, WAIT).await[0];
    assert_eq!(request.header("transfer-encoding"), Some("chunked"));
    assert_eq!(
        request.json(),
        serde_json::json!({"call_id": "chunked", "n": 1})
    );
}

#[tokio::test]
async fn other_paths_and_methods_get_404_without_using_the_script() {
    let ca = TestCa::new();
    let receiver = Receiver::start(&ca, vec![Reply::Status(201), Reply::Status(500)]).await;
    let client = client_trusting(&ca);
    let base = format!("https://{}", receiver.addr());

    let wrong_path = post(&client, &format!("{base}/elsewhere"), "{}").await;
    assert_eq!(wrong_path.status(), StatusCode::NOT_FOUND);
    let wrong_method = client.get(receiver.url()).send().await.unwrap();
    assert_eq!(wrong_method.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        post(&client, &receiver.url(), "{}").await.status(),
        StatusCode::CREATED
    );

    let paths: Vec<(String, String)> = receiver
        .requests()
        .into_iter()
        .map(|r| (r.method, r.path))
        .collect();
    assert_eq!(
        paths,
        [
            ("POST".to_owned(), "/elsewhere".to_owned()),
            ("GET".to_owned(), "/hook".to_owned()),
            ("POST".to_owned(), "/hook".to_owned()),
        ]
    );
}

#[tokio::test]
#[should_panic(expected = "expected 2 request(s)")]
async fn waiting_for_requests_that_never_come_panics_clearly() {
    let ca = TestCa::new();
    let receiver = Receiver::start(&ca, vec![Reply::Status(200)]).await;
    post(&client_trusting(&ca), &receiver.url(), "{}").await;
    receiver
        .wait_for_requests(2, Duration::from_millis(200))
        .await;
}

fn outbound_client(ca: &TestCa, ports: Vec<u16>, follow_redirects: bool) -> OutboundClient {
    let policy = OutboundPolicy {
        allow_private: false,
        allowed_loopback_ports: ports,
    };
    let options = ClientOptions {
        connect_timeout: Duration::from_secs(5),
        total_timeout: WAIT,
        extra_ca_file: Some(ca.ca_file().to_owned()),
        follow_redirects,
    };
    OutboundClient::new(policy, &options).expect("an outbound client")
}

#[tokio::test]
async fn the_outbound_client_without_redirects_returns_the_302_and_goes_nowhere_else() {
    let ca = TestCa::new();
    let target = Receiver::start(&ca, vec![Reply::Status(200)]).await;
    let receiver = Receiver::start(&ca, vec![Reply::Redirect(target.url())]).await;
    let client = outbound_client(&ca, vec![receiver.port(), target.port()], false);

    let response = client
        .request(Method::POST, &receiver.url())
        .unwrap()
        .body("{}")
        .send()
        .await
        .expect("the receiver answers");
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(response.headers()["location"], target.url().as_str());
    assert_eq!(receiver.requests().len(), 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(target.requests().is_empty(), "the redirect was followed");
}

#[tokio::test]
async fn the_outbound_client_with_redirects_follows_the_302() {
    let ca = TestCa::new();
    let target = Receiver::start(&ca, vec![Reply::Status(200)]).await;
    let receiver = Receiver::start(&ca, vec![Reply::Redirect(target.url())]).await;
    let client = outbound_client(&ca, vec![receiver.port(), target.port()], true);

    client
        .request(Method::POST, &receiver.url())
        .unwrap()
        .body("{}")
        .send()
        .await
        .expect("the redirect is followed");
    // A 302 turns the POST into a GET, which the target answers 404; what matters is that
    // it arrived.
    let followed = target.wait_for_requests(1, WAIT).await;
    assert_eq!(followed[0].path, "/hook");
}
