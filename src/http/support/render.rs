//! The HTML of the support page: escaping, the sign-in and lookup pages, the call summary
//! and its timeline. Every value printed comes from partners or events and goes through
//! [`escape_html`].

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use poem::http::StatusCode;
use poem::Response;

use super::Lookup;
use crate::queries::calls::CallView;
use crate::queries::history::CallEventView;

/// Where the page is served.
pub const SUPPORT_PATH: &str = "/support";

/// `/support`, with the lookup in the query when there is one. Always a path on this service,
/// so the sign-in cannot be used to redirect anywhere else.
pub fn page_location(lookup: &Lookup) -> String {
    match lookup.target() {
        Some((partner, call)) => format!(
            "{SUPPORT_PATH}?partner={}&call={}",
            percent_encode(partner),
            percent_encode(call)
        ),
        None => SUPPORT_PATH.to_owned(),
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
pub fn html(status: StatusCode, body: &str) -> Response {
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

pub fn login_page(lookup: &Lookup, error: Option<&str>) -> String {
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
pub fn call_page(
    lookup: &Lookup,
    result: Option<(Option<CallView>, Vec<CallEventView>)>,
) -> String {
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
        (
            "contact number",
            call.contact_number
                .clone()
                .unwrap_or_else(|| "(erased)".to_owned()),
        ),
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
        (
            "callback status",
            opt(&call.callback_status.map(|s| s.as_str())),
        ),
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

    #[test]
    fn values_sent_back_in_the_forms_are_escaped() {
        let lookup = Lookup {
            partner: "\"><script>".into(),
            call: "c".into(),
        };
        for page in [login_page(&lookup, Some("<b>")), call_page(&lookup, None)] {
            assert!(
                !page.contains("<script>") && !page.contains("<b>"),
                "{page}"
            );
            assert!(page.contains("&quot;&gt;&lt;script&gt;"));
        }
    }
}
