//! `/support`: a read-only HTML page for support staff to look up one call — its summary from
//! the read model and its timeline of events — behind the admin token.
//!
//! A browser cannot send the `Authorization: Bearer` header the JSON admin API wants, so the
//! page signs in with a form: `POST /support/login` checks the token and sets a session cookie
//! that proves knowledge of the token without containing it (see [`session_value`]). Every
//! value printed comes from partners or events and goes through [`escape_html`].

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use poem::http::StatusCode;
use poem::web::{Data, Form, Query};
use poem::{get, handler, post, Endpoint, EndpointExt, IntoResponse, Request, Response, Route};
use sha2::Sha256;

use super::auth::token_matches;
use super::error::ApiError;
use super::AppState;
use crate::config::Secret;
use crate::queries::calls::{get_call, CallView};
use crate::queries::history::{call_history, CallEventView};

/// The session cookie. Its path keeps it away from the partner API.
const COOKIE_NAME: &str = "callingest_support";
const COOKIE_PATH: &str = "/support";
/// How long a sign-in lasts; rotating the admin token ends every session at once.
const SESSION_TTL: Duration = Duration::from_secs(8 * 60 * 60);
/// What the session MAC is computed over, besides the expiry: a fixed label so the MAC cannot
/// be mistaken for any other use of the admin token as a key.
const SESSION_LABEL: &str = "callingest support session v1";

/// The routes under `/support`.
pub fn routes(state: Arc<AppState>) -> impl Endpoint {
    Route::new()
        .at("/", get(page))
        .at("/login", post(login))
        .at("/logout", post(logout))
        .data(state)
}

/// What `GET /support` is asked to show; both fields are needed for a lookup.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct Lookup {
    partner: String,
    call: String,
}

impl Lookup {
    /// `(partner, call)` when both are given (surrounding blanks ignored).
    fn target(&self) -> Option<(&str, &str)> {
        let (partner, call) = (self.partner.trim(), self.call.trim());
        (!partner.is_empty() && !call.is_empty()).then_some((partner, call))
    }
}

/// The sign-in form. `partner` and `call` carry a lookup through the sign-in, so a link to a
/// call still lands on that call.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct Login {
    token: String,
    partner: String,
    call: String,
}

#[handler]
async fn page(
    state: Data<&Arc<AppState>>,
    request: &Request,
    Query(lookup): Query<Lookup>,
) -> Response {
    if !has_valid_session(&state, request) {
        return html(StatusCode::OK, &login_page(&lookup, None));
    }
    let Some((partner, call)) = lookup.target() else {
        return html(StatusCode::OK, &call_page(&lookup, None));
    };
    let view = match get_call(&state.pool, partner, call).await {
        Ok(view) => view,
        Err(err) => return ApiError::from(err).into_response(),
    };
    let events = match call_history(&state.pool, &format!("{partner}:{call}"), true).await {
        Ok(events) => events,
        Err(err) => return ApiError::from(err).into_response(),
    };
    html(StatusCode::OK, &call_page(&lookup, Some((view, events))))
}

#[handler]
async fn login(
    state: Data<&Arc<AppState>>,
    request: &Request,
    Form(form): Form<Login>,
) -> Response {
    let lookup = Lookup {
        partner: form.partner,
        call: form.call,
    };
    let source = state.trusted_proxies.client_ip(request);
    let now = Instant::now();
    if let Some(wait) = source.and_then(|ip| state.login_throttle.check(ip, now).err()) {
        tracing::warn!("support sign-in refused: too many failed sign-ins from this address");
        let wait_secs = wait.as_secs().max(1);
        let mut answer = html(
            StatusCode::TOO_MANY_REQUESTS,
            &login_page(
                &lookup,
                Some(&format!(
                    "Too many failed sign-ins from your address. Try again in {wait_secs} seconds."
                )),
            ),
        );
        answer.headers_mut().insert(
            "retry-after",
            wait_secs
                .to_string()
                .parse()
                .expect("digits are a valid header"),
        );
        return answer;
    }
    let refused = |reason: &str| {
        tracing::warn!("support sign-in refused: {reason}");
        if let Some(ip) = source {
            state.login_throttle.record_failure(ip, now);
        }
        html(
            StatusCode::FORBIDDEN,
            &login_page(&lookup, Some("Wrong token.")),
        )
    };
    let Some(token) = state.admin_token.as_ref() else {
        return refused("no admin token is configured");
    };
    if !token_matches(&form.token, token) {
        return refused("wrong token");
    }
    if let Some(ip) = source {
        state.login_throttle.record_success(ip);
    }
    let expires = unix_now() + SESSION_TTL.as_secs();
    let cookie = format!(
        "{COOKIE_NAME}={}; Path={COOKIE_PATH}; Max-Age={}; HttpOnly; SameSite=Strict{}",
        session_value(token, expires),
        SESSION_TTL.as_secs(),
        secure_attribute(&state, request),
    );
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header("location", page_location(&lookup))
        .header("set-cookie", cookie)
        .header("cache-control", "no-store")
        .finish()
}

#[handler]
fn logout(state: Data<&Arc<AppState>>, request: &Request) -> Response {
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header("location", COOKIE_PATH)
        .header(
            "set-cookie",
            format!(
                "{COOKIE_NAME}=; Path={COOKIE_PATH}; Max-Age=0; HttpOnly; SameSite=Strict{}",
                secure_attribute(&state, request)
            ),
        )
        .finish()
}

/// `; Secure` when the browser reached us over HTTPS (directly, or through a trusted proxy
/// that says so), so the cookie never travels in clear text afterwards. Not over plain HTTP,
/// where a browser would refuse to store it and the page would be unusable.
fn secure_attribute(state: &AppState, request: &Request) -> &'static str {
    if state.trusted_proxies.is_https(request) {
        "; Secure"
    } else {
        ""
    }
}

/// `{expires}.{hex HMAC-SHA256(key = admin token, SESSION_LABEL + expires)}`: only someone who
/// knows the token can make one, the token cannot be recovered from it, it stops working when
/// it expires or when the token changes, and the server keeps no session state.
fn session_value(token: &Secret, expires: u64) -> String {
    format!(
        "{expires}.{}",
        hex::encode(session_mac(token, expires).finalize().into_bytes())
    )
}

fn session_mac(token: &Secret, expires: u64) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(token.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(SESSION_LABEL.as_bytes());
    mac.update(b"\n");
    mac.update(expires.to_string().as_bytes());
    mac
}

/// Whether `value` is a session made with `token` that has not expired at `now`.
fn session_is_valid(token: &Secret, value: &str, now: u64) -> bool {
    let Some((expires, signature)) = value.split_once('.') else {
        return false;
    };
    let (Ok(expires), Ok(signature)) = (expires.parse::<u64>(), hex::decode(signature)) else {
        return false;
    };
    // `verify_slice` compares in constant time.
    now < expires && session_mac(token, expires).verify_slice(&signature).is_ok()
}

fn has_valid_session(state: &AppState, request: &Request) -> bool {
    let Some(token) = state.admin_token.as_ref() else {
        return false;
    };
    let now = unix_now();
    request
        .headers()
        .get_all("cookie")
        .iter()
        .filter_map(|header| header.to_str().ok())
        .flat_map(|header| header.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == COOKIE_NAME)
        .any(|(_, value)| session_is_valid(token, value, now))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// `/support`, with the lookup in the query when there is one. Always a path on this service,
/// so the sign-in cannot be used to redirect anywhere else.
fn page_location(lookup: &Lookup) -> String {
    match lookup.target() {
        Some((partner, call)) => format!(
            "{COOKIE_PATH}?partner={}&call={}",
            percent_encode(partner),
            percent_encode(call)
        ),
        None => COOKIE_PATH.to_owned(),
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(byte as char);
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

/// Makes `value` safe as HTML text and inside a quoted attribute value.
pub fn escape_html(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// An HTML answer that is never cached, never framed and runs no script.
fn html(status: StatusCode, body: &str) -> Response {
    Response::builder()
        .status(status)
        .content_type("text/html; charset=utf-8")
        .header("cache-control", "no-store")
        .header(
            "content-security-policy",
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        )
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer")
        .body(body.to_owned())
}

const STYLE: &str = "
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #222; }
h1 { font-size: 1.3rem; margin: 0 0 1rem; }
h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
form { margin: .5rem 0 1rem; }
label { margin-right: .75rem; }
input[type=text], input[type=password] { font: inherit; padding: .2rem .4rem; width: 16rem; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
code { font: 12px/1.3 ui-monospace, monospace; white-space: pre-wrap; word-break: break-all; }
.error { color: #a00; font-weight: bold; }
.note { color: #666; }
.header { display: flex; justify-content: space-between; align-items: baseline; }
.summary { display: grid; grid-template-columns: repeat(auto-fill, minmax(24rem, 1fr));
  gap: 0 1.5rem; margin: 0; }
.summary div { display: flex; border-bottom: 1px solid #eee; padding: .15rem 0; }
.summary dt { flex: 0 0 13rem; font-weight: bold; }
.summary dd { margin: 0; word-break: break-all; }
";

fn document(body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>callingest support</title><style>{STYLE}</style></head>\
         <body>{body}</body></html>\n"
    )
}

fn login_page(lookup: &Lookup, error: Option<&str>) -> String {
    let mut body = String::from("<h1>callingest support</h1>");
    if let Some(error) = error {
        let _ = write!(body, "<p class=\"error\">{}</p>", escape_html(error));
    }
    let _ = write!(
        body,
        "<form method=\"post\" action=\"/support/login\">\
         <label>Admin token <input type=\"password\" name=\"token\" \
         autocomplete=\"current-password\" required autofocus></label>\
         <input type=\"hidden\" name=\"partner\" value=\"{}\">\
         <input type=\"hidden\" name=\"call\" value=\"{}\">\
         <button type=\"submit\">Sign in</button></form>\
         <p class=\"note\">Read-only: this page never changes anything.</p>",
        escape_html(&lookup.partner),
        escape_html(&lookup.call),
    );
    document(&body)
}

/// The lookup form and, when a lookup was made, its result: `None` for no lookup, else the
/// call as the read model holds it (if it does) and its events.
fn call_page(lookup: &Lookup, result: Option<(Option<CallView>, Vec<CallEventView>)>) -> String {
    let mut body = String::from(
        "<div class=\"header\"><h1>callingest support</h1>\
         <form method=\"post\" action=\"/support/logout\"><button type=\"submit\">Sign out</button>\
         </form></div>",
    );
    let _ = write!(
        body,
        "<form method=\"get\" action=\"/support\">\
         <label>Partner id <input type=\"text\" name=\"partner\" value=\"{}\" required></label>\
         <label>Call id <input type=\"text\" name=\"call\" value=\"{}\" required></label>\
         <button type=\"submit\">Look up</button></form>",
        escape_html(&lookup.partner),
        escape_html(&lookup.call),
    );
    match result {
        None => {}
        Some((None, events)) if events.is_empty() => {
            body.push_str("<p class=\"error\">No such call.</p>");
        }
        Some((view, events)) => {
            let (partner, call) = lookup.target().unwrap_or_default();
            let _ = write!(
                body,
                "<h2>Call <code>{}</code> of partner <code>{}</code></h2>",
                escape_html(call),
                escape_html(partner),
            );
            match view {
                Some(view) => summary(&mut body, &view),
                // Events are written before the projector applies them: a lag, not a loss.
                None => body.push_str(
                    "<p class=\"note\">Not in the read model yet (the projection is \
                     behind); its events so far:</p>",
                ),
            }
            timeline(&mut body, &events);
        }
    }
    document(&body)
}

fn time(value: DateTime<Utc>) -> String {
    value.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn summary(body: &mut String, call: &CallView) {
    fn opt<T: ToString>(value: &Option<T>) -> String {
        value.as_ref().map_or_else(|| "—".to_owned(), T::to_string)
    }
    fn opt_time(value: &Option<DateTime<Utc>>) -> String {
        value.map_or_else(|| "—".to_owned(), time)
    }
    let status = serde_json::to_value(call.status)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{:?}", call.status));
    let rows: [(&str, String); 39] = [
        ("status", status),
        ("partner id", call.partner_id.clone()),
        ("call id", call.id.clone()),
        ("tenant id", call.tenant_id.clone()),
        ("sub-tenant id", call.sub_tenant_id.clone()),
        ("batch id", call.batch_id.to_string()),
        ("agent id", call.agent_id.clone()),
        ("customer id", call.customer_id.clone()),
        ("contact number", call.contact_number.clone()),
        ("start time", time(call.start_time)),
        ("end time", time(call.end_time)),
        ("accepted at", time(call.accepted_at)),
        ("fetch started at", opt_time(&call.fetch_started_at)),
        ("fetched at", opt_time(&call.fetched_at)),
        ("completed at", opt_time(&call.completed_at)),
        ("failed at", opt_time(&call.failed_at)),
        ("processing time (ms)", opt(&call.processing_time_ms)),
        ("fetch attempts", call.fetch_attempts.to_string()),
        (
            "duplicate submissions",
            call.duplicate_submissions.to_string(),
        ),
        ("error", opt(&call.error)),
        ("recording format", opt(&call.recording_format)),
        ("recording bytes", opt(&call.recording_bytes)),
        ("recording SHA-256", opt(&call.recording_sha256)),
        ("recording duration (ms)", opt(&call.recording_duration_ms)),
        ("sample rate", opt(&call.sample_rate)),
        ("channels", opt(&call.channels)),
        ("codec", opt(&call.codec)),
        ("agent talk (ms)", opt(&call.agent_talk_ms)),
        ("customer talk (ms)", opt(&call.customer_talk_ms)),
        ("silence ratio", opt(&call.silence_ratio)),
        ("longest silence (ms)", opt(&call.longest_silence_ms)),
        ("overlap (ms)", opt(&call.overlap_ms)),
        ("mean dBFS", opt(&call.mean_dbfs)),
        ("peak dBFS", opt(&call.peak_dbfs)),
        ("clipping ratio", opt(&call.clipping_ratio)),
        ("callback status", opt(&call.callback_status)),
        ("callback attempts", call.callback_attempts.to_string()),
        (
            "callback last status code",
            opt(&call.callback_last_status_code),
        ),
        (
            "callback delivered at",
            opt_time(&call.callback_delivered_at),
        ),
    ];
    body.push_str("<h2>Summary</h2><dl class=\"summary\">");
    for (name, value) in rows {
        let _ = write!(
            body,
            "<div><dt>{}</dt><dd>{}</dd></div>",
            escape_html(name),
            escape_html(&value)
        );
    }
    body.push_str("</dl>");
}

fn timeline(body: &mut String, events: &[CallEventView]) {
    let noun = if events.len() == 1 { "event" } else { "events" };
    let _ = write!(body, "<h2>Timeline ({} {noun})</h2>", events.len());
    body.push_str(
        "<table><tr><th>#</th><th>recorded at</th><th>event</th><th>payload</th>\
         <th>metadata</th></tr>",
    );
    for event in events {
        let metadata = event
            .metadata
            .as_ref()
            .map_or_else(|| "—".to_owned(), |value| value.to_string());
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td>\
             <td><code>{}</code></td></tr>",
            event.sequence,
            escape_html(&time(event.recorded_at)),
            escape_html(&event.event_type),
            escape_html(&event.payload.to_string()),
            escape_html(&metadata),
        );
    }
    body.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_html_neutralises_tags_quotes_and_ampersands() {
        assert_eq!(
            escape_html("<script>alert(1)</script>"),
            "&lt;script&gt;alert(1)&lt;/script&gt;"
        );
        assert_eq!(
            escape_html(r#"" onmouseover='x' & more"#),
            "&quot; onmouseover=&#39;x&#39; &amp; more"
        );
        assert_eq!(escape_html("plain é text"), "plain é text");
    }

    #[test]
    fn a_session_made_with_the_token_is_valid_until_it_expires() {
        let token = Secret::new("the-token");
        let value = session_value(&token, 1_000);
        assert!(session_is_valid(&token, &value, 999));
        assert!(!session_is_valid(&token, &value, 1_000));
        assert!(!value.contains("the-token"));
    }

    #[test]
    fn a_session_is_refused_after_the_token_changes_or_when_tampered_with() {
        let token = Secret::new("the-token");
        let value = session_value(&token, 1_000);
        assert!(!session_is_valid(&Secret::new("other-token"), &value, 0));
        let later = value.replacen("1000.", "9999.", 1);
        assert!(!session_is_valid(&token, &later, 0));
        assert!(!session_is_valid(&token, "garbage", 0));
        assert!(!session_is_valid(&token, "1000.zz", 0));
    }

    #[test]
    fn only_the_exact_token_matches() {
        let token = Secret::new("the-token");
        assert!(token_matches("the-token", &token));
        assert!(!token_matches("the-toke", &token));
        assert!(!token_matches("", &token));
    }

    #[test]
    fn the_sign_in_redirect_stays_on_the_support_page() {
        let lookup = Lookup {
            partner: "p a".into(),
            call: "//evil.example/?x=<y>&z".into(),
        };
        assert_eq!(
            page_location(&lookup),
            "/support?partner=p%20a&call=%2F%2Fevil.example%2F%3Fx%3D%3Cy%3E%26z"
        );
        assert_eq!(page_location(&Lookup::default()), "/support");
    }
}
