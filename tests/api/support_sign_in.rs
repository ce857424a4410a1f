//! Signing in to `/support`: the cookie is `Secure` when the browser came over HTTPS (as a
//! trusted proxy says), and failed sign-ins are throttled per source address.

use std::time::Duration;

use callingest::config::HttpConfig;
use reqwest::redirect::Policy;
use reqwest::StatusCode;

use crate::helpers::{TestApp, ADMIN_TOKEN};

/// The service behind a "proxy" on 127.0.0.1: the test client plays the proxy.
async fn behind_a_proxy() -> TestApp {
    let http = HttpConfig {
        trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
        ..HttpConfig::default()
    };
    TestApp::builder().http(http).spawn().await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn sign_in(app: &TestApp, token: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = client()
        .post(app.url("/support/login"))
        .form(&[("token", token)]);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

fn cookie(response: &reqwest::Response) -> String {
    response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn the_session_cookie_is_secure_only_when_the_browser_came_over_https() {
    let app = behind_a_proxy().await;
    let plain = sign_in(&app, ADMIN_TOKEN, &[]).await;
    assert_eq!(plain.status(), StatusCode::SEE_OTHER);
    assert!(!cookie(&plain).contains("Secure"), "{}", cookie(&plain));

    let https = sign_in(&app, ADMIN_TOKEN, &[("x-forwarded-proto", "https")]).await;
    assert_eq!(https.status(), StatusCode::SEE_OTHER);
    assert!(cookie(&https).ends_with("; Secure"), "{}", cookie(&https));

    // Without a trusted proxy, anyone could claim HTTPS: the header is not believed.
    let direct = TestApp::spawn().await;
    let claimed = sign_in(&direct, ADMIN_TOKEN, &[("x-forwarded-proto", "https")]).await;
    assert_eq!(claimed.status(), StatusCode::SEE_OTHER);
    assert!(!cookie(&claimed).contains("Secure"));
}

#[tokio::test]
async fn failed_sign_ins_are_throttled_per_source_address() {
    let app = behind_a_proxy().await;
    let guesser = [("x-forwarded-for", "198.51.100.7")];
    for _ in 0..10 {
        let response = sign_in(&app, "a-guess", &guesser).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }
    // Even the right token is not tried from that address now.
    let refused = sign_in(&app, ADMIN_TOKEN, &guesser).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait > 0 && wait <= 15 * 60, "{wait}");
    assert!(refused.headers().get("set-cookie").is_none());
    assert!(refused
        .text()
        .await
        .unwrap()
        .contains("Too many failed sign-ins"));

    // Another client behind the same proxy is not held back.
    let other = sign_in(&app, ADMIN_TOKEN, &[("x-forwarded-for", "198.51.100.8")]).await;
    assert_eq!(other.status(), StatusCode::SEE_OTHER);
}
