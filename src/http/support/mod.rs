//! `/support`: a read-only HTML page for support staff to look up one call — its summary from
//! the read model and its timeline of events — behind the admin token.
//!
//! A browser cannot send the `Authorization: Bearer` header the JSON admin API wants, so the
//! page signs in with a form: `POST /support/login` checks the token and sets a session cookie
//! that proves knowledge of the token without containing it ([`session`]). The HTML is made by
//! [`render`]; the handlers here only tie the two to the read side.

mod render;
mod session;

use std::sync::Arc;
use std::time::Instant;

use callingest_domain::call::call_aggregate_id;
use callingest_domain::values::{CallId, PartnerId};
use poem::http::StatusCode;
use poem::web::{Data, Form, Query};
use poem::{get, handler, post, Endpoint, EndpointExt, IntoResponse, Request, Response, Route};

use super::auth::token_matches;
use super::error::ApiError;
use super::AppState;
use crate::queries::calls::get_call;
use crate::queries::history::call_history;
use render::{call_page, html, login_page, page_location, SUPPORT_PATH};

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
    if !session::has_valid_session(state.admin_token.as_ref(), request) {
        return html(StatusCode::OK, &login_page(&lookup, None));
    }
    let Some((partner, call)) = lookup.target() else {
        return html(StatusCode::OK, &call_page(&lookup, None));
    };
    // Ids no partner could have sent name no call.
    let (Ok(partner_id), Ok(call_id)) = (PartnerId::parse(partner), CallId::parse(call)) else {
        return html(
            StatusCode::OK,
            &call_page(&lookup, Some((None, Vec::new()))),
        );
    };
    let aggregate_id = call_aggregate_id(&partner_id, &call_id);
    let aggregate_id = aggregate_id.as_str();
    let privacy = &state.privacy;
    // From the replica; from the primary when the replica has not got the call yet.
    let found = state
        .reads
        .read(
            |pool| async move {
                let view = get_call(&pool, partner, call).await?;
                let events = call_history(&pool, privacy, aggregate_id, true).await?;
                Ok((view, events))
            },
            |(view, events)| view.is_none() || events.is_empty(),
        )
        .await;
    let (view, events) = match found {
        Ok(found) => found,
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
    let cookie = session::sign_in_cookie(token, is_https(&state, request));
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
        .header("location", SUPPORT_PATH)
        .header(
            "set-cookie",
            session::sign_out_cookie(is_https(&state, request)),
        )
        .finish()
}

/// Whether the browser reached us over HTTPS (directly, or through a trusted proxy that says
/// so): the session cookie is then `Secure`, so it never travels in clear text afterwards.
fn is_https(state: &AppState, request: &Request) -> bool {
    state.trusted_proxies.is_https(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn only_the_exact_token_matches() {
        let token = Secret::new("the-token");
        assert!(token_matches("the-token", &token));
        assert!(!token_matches("the-toke", &token));
        assert!(!token_matches("", &token));
    }

    #[test]
    fn a_lookup_needs_both_ids_and_ignores_surrounding_blanks() {
        let lookup = |partner: &str, call: &str| Lookup {
            partner: partner.into(),
            call: call.into(),
        };
        assert_eq!(lookup(" p ", "c\t").target(), Some(("p", "c")));
        assert_eq!(lookup("p", "  ").target(), None);
        assert_eq!(lookup("", "c").target(), None);
    }
}
