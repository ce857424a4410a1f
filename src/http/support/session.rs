//! The support page's session: a cookie proving knowledge of the admin token without
//! containing it. Stateless: it is checked by its MAC, ends when it expires, and every session
//! ends at once when the admin token is rotated.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use poem::Request;
use sha2::Sha256;

use crate::config::Secret;

/// The session cookie. Its path keeps it away from the partner API.
pub const COOKIE_NAME: &str = "callingest_support";
pub const COOKIE_PATH: &str = "/support";
/// How long a sign-in lasts; rotating the admin token ends every session at once.
const SESSION_TTL: Duration = Duration::from_secs(8 * 60 * 60);
/// What the session MAC is computed over, besides the expiry: a fixed label so the MAC cannot
/// be mistaken for any other use of the admin token as a key.
const SESSION_LABEL: &str = "callingest support session v1";

/// The `Set-Cookie` value that signs in for [`SESSION_TTL`]; `secure` when the browser reached
/// us over HTTPS (see `super::secure_attribute`).
pub fn sign_in_cookie(token: &Secret, secure: bool) -> String {
    let expires = unix_now() + SESSION_TTL.as_secs();
    format!(
        "{COOKIE_NAME}={}; Path={COOKIE_PATH}; Max-Age={}; HttpOnly; SameSite=Strict{}",
        session_value(token, expires),
        SESSION_TTL.as_secs(),
        secure_flag(secure),
    )
}

/// The `Set-Cookie` value that signs out.
pub fn sign_out_cookie(secure: bool) -> String {
    format!(
        "{COOKIE_NAME}=; Path={COOKIE_PATH}; Max-Age=0; HttpOnly; SameSite=Strict{}",
        secure_flag(secure)
    )
}

/// `; Secure` only over HTTPS: over plain HTTP a browser would refuse to store the cookie and
/// the page would be unusable.
fn secure_flag(secure: bool) -> &'static str {
    if secure {
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

/// Whether `request` carries a session cookie made with `token` that has not expired.
pub fn has_valid_session(token: Option<&Secret>, request: &Request) -> bool {
    let Some(token) = token else {
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

#[cfg(test)]
mod tests {
    use super::*;

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

    fn request_with_cookie(cookie: &str) -> Request {
        Request::builder().header("cookie", cookie).finish()
    }

    #[test]
    fn the_sign_in_cookie_opens_a_session_among_other_cookies_until_the_token_changes() {
        let token = Secret::new("the-token");
        let set_cookie = sign_in_cookie(&token, false);
        let pair = set_cookie.split(';').next().unwrap();
        assert!(set_cookie.contains("Path=/support") && set_cookie.contains("HttpOnly"));
        assert!(!set_cookie.contains("Secure"));
        assert!(sign_in_cookie(&token, true).ends_with("; Secure"));

        let request = request_with_cookie(&format!("theme=dark; {pair}"));
        assert!(has_valid_session(Some(&token), &request));
        assert!(!has_valid_session(Some(&Secret::new("rotated")), &request));
        assert!(!has_valid_session(None, &request));
        assert!(!has_valid_session(
            Some(&token),
            &request_with_cookie("theme=dark")
        ));
    }

    #[test]
    fn the_sign_out_cookie_expires_the_session_at_once() {
        let cookie = sign_out_cookie(true);
        assert!(cookie.starts_with(&format!("{COOKIE_NAME}=;")));
        assert!(cookie.contains("Max-Age=0") && cookie.ends_with("; Secure"));
    }
}
