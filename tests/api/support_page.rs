//! `/support`: the read-only HTML page for support staff, over plain HTTP and in a real
//! headless Chromium.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use callingest_projections::read_models::ReadModels;
use callingest_projections::Projector;
use poem::listener::{Acceptor, Listener, TcpListener};
use reqwest::redirect::Policy;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::projectors::catch_up_until;
use crate::helpers::{batch, item_with_id, TestApp, ADMIN_TOKEN};

/// A call id and agent name a careless page would run as script.
const HOSTILE: &str = "<script>alert(1)</script>";
const HOSTILE_ESCAPED: &str = "&lt;script&gt;alert(1)&lt;/script&gt;";

/// Submits one call whose id and agent name are [`HOSTILE`] and projects it into the read
/// model (the test app runs the API only).
async fn submit_hostile_call(app: &TestApp) {
    let mut item = item_with_id(HOSTILE);
    item["agent"]["name"] = json!(format!("Agent \"{HOSTILE}\""));
    let response = app.post_batch(&batch(vec![item])).await;
    assert_eq!(response.status(), StatusCode::OK);

    let projector = Projector::new(app.pool.clone(), Arc::new(ReadModels(app.privacy.clone())));
    catch_up_until(
        &projector,
        app,
        &format!(
            "select count(*) from call where partner_id = '{}' and call_id = '{HOSTILE}'",
            app.partner.partner_id
        ),
        1,
    )
    .await;
}

/// A client that shows redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_support_page_signs_in_with_the_admin_token_and_shows_a_call_escaped() {
    let app = TestApp::spawn().await;
    submit_hostile_call(&app).await;
    let client = no_redirects();
    let call_page = format!(
        "/support?partner={}&call=%3Cscript%3Ealert%281%29%3C%2Fscript%3E",
        app.partner.partner_id
    );

    // No session: the sign-in form, and nothing of the call.
    let response = client.get(app.url(&call_page)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = response.text().await.unwrap();
    assert!(page.contains("name=\"token\""), "{page}");
    assert!(!page.contains("CallAccepted"), "{page}");
    assert!(!page.contains(HOSTILE), "{page}");

    // A wrong token: the form again, 403, no cookie.
    let response = client
        .post(app.url("/support/login"))
        .form(&[("token", "not-the-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.headers().get("set-cookie").is_none());
    let page = response.text().await.unwrap();
    assert!(page.contains("Wrong token"), "{page}");
    assert!(page.contains("name=\"token\""), "{page}");

    // A forged or stale cookie is no session.
    let page = client
        .get(app.url(&call_page))
        .header("cookie", "callingest_support=99999999999.00ff")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("name=\"token\""), "{page}");

    // The right token: a session cookie that does not contain the token, and back to the call.
    let response = client
        .post(app.url("/support/login"))
        .form(&[
            ("token", ADMIN_TOKEN),
            ("partner", app.partner.partner_id.as_str()),
            ("call", HOSTILE),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()["location"], call_page.as_str());
    let set_cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    assert!(set_cookie.contains("Path=/support"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let (name, value) = cookie.split_once('=').unwrap();
    assert_eq!(name, "callingest_support");
    assert!(!value.is_empty());
    assert!(!value.contains(ADMIN_TOKEN), "{set_cookie}");

    // With the session: the summary and the timeline, every partner value escaped.
    let response = client
        .get(app.url(&call_page))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let page = response.text().await.unwrap();
    assert!(page.contains("CallAccepted"), "{page}");
    assert!(page.contains("tenant1"), "{page}");
    assert!(!page.contains(HOSTILE), "{page}");
    assert!(!page.contains("<script"), "{page}");
    assert!(page.contains(HOSTILE_ESCAPED), "{page}");
    assert!(
        page.contains(&format!("Agent \\&quot;{HOSTILE_ESCAPED}\\&quot;")),
        "the agent name in the payload is escaped: {page}"
    );

    // An unknown call says so.
    let page = client
        .get(app.url("/support?partner=partner-a&call=no-such-call"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("No such call"), "{page}");
}

/// The path of a Chromium binary from `scripts/ensure-chromium` (which installs it if need
/// be). A missing browser fails the test: skipping would hide that the page was never seen.
fn chromium() -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/ensure-chromium");
    let output = std::process::Command::new(script)
        .stdin(Stdio::null())
        .output()
        .expect("scripts/ensure-chromium runs");
    assert!(
        output.status.success(),
        "scripts/ensure-chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let path = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert!(Path::new(&path).exists(), "no Chromium at {path:?}");
    path
}

/// Serves `html` at every path of a loopback port; the address is returned.
async fn serve_page(html: String) -> String {
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .unwrap();
    let address = *acceptor.local_addr()[0].as_socket_addr().unwrap();
    let page = poem::endpoint::make_sync(move |_| poem::web::Html(html.clone()));
    tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(page));
    format!("http://{address}")
}

fn attribute(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
}

#[tokio::test]
async fn a_browser_signs_in_and_sees_the_call_timeline() {
    let chromium = chromium();
    let app = TestApp::spawn().await;
    submit_hostile_call(&app).await;

    // Signing in takes a form POST, which headless Chromium's `--dump-dom` cannot make and
    // the DevTools protocol would need a websocket client for. So the test serves a page of
    // its own that submits the service's sign-in form on load, as a person would; Chromium
    // follows the 303 to the call page with the cookie it just got, and dumps that page.
    // This keeps the service free of test-only ways in (no tokens in URLs, no pre-seeded
    // sessions). Both servers are on 127.0.0.1 and ports do not make a site, so the
    // SameSite=Strict cookie is first-party here.
    let sign_in = serve_page(format!(
        "<!doctype html><html><body>\
         <form id=\"login\" method=\"post\" action=\"{}\">\
         <input type=\"hidden\" name=\"token\" value=\"{}\">\
         <input type=\"hidden\" name=\"partner\" value=\"{}\">\
         <input type=\"hidden\" name=\"call\" value=\"{}\">\
         </form><script>document.getElementById('login').submit()</script>\
         </body></html>",
        app.url("/support/login"),
        attribute(ADMIN_TOKEN),
        attribute(&app.partner.partner_id),
        attribute(HOSTILE),
    ))
    .await;

    let profile = tempfile::tempdir().unwrap();
    let screenshot = profile.path().join("support.png");
    let started = Instant::now();
    let run = tokio::process::Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1200,900",
            "--dump-dom",
        ])
        .arg(format!(
            "--user-data-dir={}",
            profile.path().join("profile").display()
        ))
        .arg(format!("--screenshot={}", screenshot.display()))
        .arg(&sign_in)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("Chromium finishes within 30 s")
        .expect("Chromium starts");
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "Chromium failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("Chromium signed in and rendered in {:?}", started.elapsed());

    assert!(dom.contains("Timeline"), "not the call page: {dom}");
    assert!(dom.contains("CallAccepted"), "{dom}");
    // The DOM as serialised: text escapes `<`, and so do attribute values in current
    // Chromium, so the raw tag could only appear if the page had made it an element.
    assert!(dom.contains(HOSTILE_ESCAPED), "the call id as text: {dom}");
    assert!(
        !dom.contains(HOSTILE),
        "no script element came out of partner data: {dom}"
    );

    let png = std::fs::read(&screenshot).expect("Chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        png.len() > 20_000,
        "a {} byte screenshot is too small to show the call page",
        png.len()
    );
    if let Ok(keep) = std::env::var("SUPPORT_SCREENSHOT") {
        std::fs::copy(&screenshot, keep).unwrap();
    }
}
