//! URLs as they may appear in logs and messages.

use reqwest::Url;

/// The URL without its query string, fragment and userinfo: presigned recording URLs carry
/// their access token in the query, and userinfo carries a password. Anything that names a
/// partner URL in a log line or an error message goes through this first.
pub fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) => {
            // Both only fail for URLs that cannot have userinfo, which then have none.
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.set_fragment(None);
            parsed.into()
        }
        Err(_) => redact_unparsed(url),
    }
}

/// Best effort for text that is not a URL: still never let a query or userinfo through.
fn redact_unparsed(url: &str) -> String {
    let without_query = url.split(['?', '#']).next().unwrap_or_default();
    let (scheme, rest) = match without_query.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, without_query),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let rest = match rest[..authority_end].rfind('@') {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{rest}"),
        None => rest.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_fragment_and_userinfo_are_dropped() {
        assert_eq!(
            redact_url("https://user:secret@bucket.example.com/rec/1.wav?X-Amz-Signature=abc#t=1"),
            "https://bucket.example.com/rec/1.wav"
        );
    }

    #[test]
    fn a_url_without_secrets_is_kept_as_it_is() {
        assert_eq!(
            redact_url("http://example.com:8080/a/b.mp3"),
            "http://example.com:8080/a/b.mp3"
        );
    }

    #[test]
    fn text_that_is_not_a_url_still_loses_its_query_and_userinfo() {
        assert_eq!(
            redact_url("https://user:pw@exa mple.com/x?token=1"),
            "https://exa mple.com/x"
        );
        assert_eq!(redact_url("no scheme?token=1"), "no scheme");
    }
}
