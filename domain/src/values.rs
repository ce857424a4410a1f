//! Value types that can only be built by parsing: holding one proves the rule it stands for.
//!
//! Each type serialises as its plain string. Deserialising trusts the stored value on purpose:
//! events written under yesterday's rules must still load after a rule is tightened.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// Why a value was refused; the text completes a sentence that starts with the field's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub String);

fn refuse(reason: impl Into<String>) -> ValueError {
    ValueError(reason.into())
}

/// Longest identifier a partner may send (call, agent and customer ids).
pub const MAX_ID_CHARS: usize = 255;
/// Longest free text (names, disposition status).
pub const MAX_TEXT_CHARS: usize = 255;
/// Longest URL, recording or callback.
pub const MAX_URL_CHARS: usize = 2_048;

fn check_length(value: &str, max: usize) -> Result<(), ValueError> {
    if value.chars().count() > max {
        return Err(refuse(format!("must be at most {max} characters")));
    }
    Ok(())
}

fn check_identifier(value: &str) -> Result<(), ValueError> {
    if value.trim().is_empty() {
        return Err(refuse("should not be empty"));
    }
    check_length(value, MAX_ID_CHARS)?;
    // Ids travel into headers, logs and URLs: control characters there only cause harm.
    if value.chars().any(char::is_control) {
        return Err(refuse("must not contain control characters"));
    }
    Ok(())
}

macro_rules! string_value {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_value!(
    /// A partner's own identifier of a call: non-empty, at most 255 characters, no control
    /// characters. Unique per partner: it is the idempotency key.
    CallId
);
impl CallId {
    pub fn parse(value: &str) -> Result<Self, ValueError> {
        check_identifier(value)?;
        Ok(Self(value.to_owned()))
    }
}

string_value!(
    /// An identifier the partner gives an agent or a customer (same rules as a call id).
    ExternalId
);
impl ExternalId {
    pub fn parse(value: &str) -> Result<Self, ValueError> {
        check_identifier(value)?;
        Ok(Self(value.to_owned()))
    }
}

string_value!(
    /// Identifies a partner: 1 to 64 of `A-Z a-z 0-9 . _ -`. Having no `:` is what lets a call's
    /// aggregate id `{partner_id}:{call_id}` be split at its first colon.
    PartnerId
);
impl PartnerId {
    pub const MAX_CHARS: usize = 64;

    pub fn parse(value: &str) -> Result<Self, ValueError> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if value.is_empty() || value.len() > Self::MAX_CHARS || !value.chars().all(allowed) {
            return Err(refuse(
                "must be 1 to 64 characters of letters, digits, '.', '_' or '-'",
            ));
        }
        Ok(Self(value.to_owned()))
    }
}

string_value!(
    /// A tenant or sub-tenant id from the request headers: non-blank, at most 255 characters.
    TenantId
);
impl TenantId {
    pub fn parse(value: &str) -> Result<Self, ValueError> {
        check_identifier(value)?;
        Ok(Self(value.to_owned()))
    }
}

string_value!(
    /// Free text of at most 255 characters (a name, a disposition status).
    ShortText
);
impl ShortText {
    pub fn parse(value: &str) -> Result<Self, ValueError> {
        check_length(value, MAX_TEXT_CHARS)?;
        Ok(Self(value.to_owned()))
    }
}

string_value!(
    /// A phone number in E.164 form: `+`, then 2 to 15 digits, the first not 0.
    E164Number
);
impl E164Number {
    pub fn parse(value: &str) -> Result<Self, ValueError> {
        let digits = value.strip_prefix('+').unwrap_or("");
        let well_formed = (2..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if !well_formed {
            return Err(refuse(
                "must be an E.164 phone number: '+' then 2 to 15 digits, e.g. +1234567890",
            ));
        }
        Ok(Self(value.to_owned()))
    }
}

string_value!(
    /// A syntactically valid email address.
    EmailAddress
);
impl EmailAddress {
    pub fn parse(value: &str) -> Result<Self, ValueError> {
        check_length(value, MAX_TEXT_CHARS)?;
        if !email_address::EmailAddress::is_valid(value) {
            return Err(refuse("must be a valid email address"));
        }
        Ok(Self(value.to_owned()))
    }
}

fn parse_url(value: &str, schemes: &[&str], expected: &str) -> Result<url::Url, ValueError> {
    check_length(value, MAX_URL_CHARS)?;
    let url = url::Url::parse(value).map_err(|_| refuse(format!("must be {expected}")))?;
    if !schemes.contains(&url.scheme()) || url.host_str().is_none_or(str::is_empty) {
        return Err(refuse(format!("must be {expected}")));
    }
    Ok(url)
}

string_value!(
    /// Where a recording can be fetched: an absolute `http://` or `https://` URL, at most 2,048
    /// characters. Whether its host may be reached is decided when fetching, not here.
    RecordingUrl
);
impl RecordingUrl {
    pub fn parse(value: &str) -> Result<Self, ValueError> {
        parse_url(value, &["http", "https"], "an http:// or https:// URL")?;
        Ok(Self(value.to_owned()))
    }
}

string_value!(
    /// An absolute `https://` URL of at most 2,048 characters (the callback target).
    HttpsUrl
);
impl HttpsUrl {
    pub fn parse(value: &str) -> Result<Self, ValueError> {
        parse_url(value, &["https"], "an https:// URL")?;
        Ok(Self(value.to_owned()))
    }
}

/// A moment in UTC, parsed from ISO 8601 with an explicit `Z` or `+00:00` offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UtcTimestamp(DateTime<Utc>);

impl UtcTimestamp {
    pub fn parse(value: &str) -> Result<Self, ValueError> {
        let invalid = || refuse("must be an ISO 8601 time in UTC, e.g. 2023-01-01T10:00:00Z");
        let in_utc = value.ends_with('Z') || value.ends_with("+00:00");
        if !in_utc {
            return Err(invalid());
        }
        let parsed = DateTime::parse_from_rfc3339(value).map_err(|_| invalid())?;
        Ok(Self(parsed.with_timezone(&Utc)))
    }

    pub fn from_datetime(at: DateTime<Utc>) -> Self {
        Self(at)
    }

    pub fn as_datetime(&self) -> DateTime<Utc> {
        self.0
    }
}

impl fmt::Display for UtcTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn call_ids_must_be_present_short_and_printable() {
        assert!(CallId::parse("call123").is_ok());
        assert_eq!(CallId::parse("").unwrap_err().0, "should not be empty");
        assert_eq!(CallId::parse("   ").unwrap_err().0, "should not be empty");
        assert!(CallId::parse(&"x".repeat(255)).is_ok());
        assert_eq!(
            CallId::parse(&"x".repeat(256)).unwrap_err().0,
            "must be at most 255 characters"
        );
        assert!(CallId::parse("a\r\nSet-Cookie: x").is_err());
        // Length counts characters, not bytes.
        assert!(CallId::parse(&"é".repeat(255)).is_ok());
    }

    #[test]
    fn partner_ids_cannot_contain_a_colon() {
        assert!(PartnerId::parse("acme-corp_1.eu").is_ok());
        assert!(PartnerId::parse("123").is_ok());
        for bad in ["", "a:b", "a b", "é", &"p".repeat(65)] {
            assert!(PartnerId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn e164_numbers_follow_the_standard() {
        for good in ["+1234567890", "+44", "+123456789012345"] {
            assert!(E164Number::parse(good).is_ok(), "{good} refused");
        }
        for bad in [
            "1234567890",
            "+0123",
            "+1",
            "+1234567890123456",
            "+12 34",
            "+12a4",
            "",
        ] {
            assert!(E164Number::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn timestamps_must_be_utc() {
        let t = UtcTimestamp::parse("2023-01-01T10:00:00Z").unwrap();
        assert_eq!(t.to_string(), "2023-01-01T10:00:00Z");
        assert_eq!(UtcTimestamp::parse("2023-01-01T10:00:00+00:00").unwrap(), t);
        assert!(UtcTimestamp::parse("2023-01-01T10:00:00.250Z").is_ok());
        for bad in [
            "2023-01-01T10:00:00+02:00",
            "2023-01-01T10:00:00",
            "2023-01-01",
            "yesterday",
            "2023-02-30T10:00:00Z",
        ] {
            assert!(UtcTimestamp::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn urls_need_the_right_scheme_and_a_host() {
        assert!(RecordingUrl::parse("https://example.com/a.mp3").is_ok());
        assert!(RecordingUrl::parse("http://127.0.0.1:8080/a.wav").is_ok());
        assert!(RecordingUrl::parse("ftp://example.com/a.mp3").is_err());
        assert!(RecordingUrl::parse("file:///etc/passwd").is_err());
        assert!(RecordingUrl::parse("/relative.mp3").is_err());
        assert!(HttpsUrl::parse("https://partner.example.com/callback").is_ok());
        assert!(HttpsUrl::parse("http://partner.example.com/callback").is_err());
        let long = format!("https://example.com/{}", "a".repeat(2_048));
        assert_eq!(
            HttpsUrl::parse(&long).unwrap_err().0,
            "must be at most 2048 characters"
        );
    }

    #[test]
    fn emails_are_checked() {
        assert!(EmailAddress::parse("agent@example.com").is_ok());
        assert!(EmailAddress::parse("not-an-email").is_err());
        assert!(EmailAddress::parse("a@").is_err());
    }

    proptest! {
        #[test]
        fn any_printable_id_up_to_the_limit_round_trips(id in "[^\\p{Cc}]{1,255}") {
            prop_assume!(!id.trim().is_empty());
            let parsed = CallId::parse(&id).unwrap();
            prop_assert_eq!(parsed.as_str(), id.as_str());
        }

        #[test]
        fn ids_over_the_limit_are_refused(id in "[a-z]{256,600}") {
            prop_assert!(CallId::parse(&id).is_err());
        }

        #[test]
        fn generated_e164_numbers_parse(first in 1u8..=9, rest in "[0-9]{1,14}") {
            let number = format!("+{first}{rest}");
            prop_assert!(E164Number::parse(&number).is_ok());
        }

        #[test]
        fn numbers_with_any_non_digit_are_refused(a in "[0-9]{1,6}", junk in "[^0-9]", b in "[0-9]{1,6}") {
            let number = format!("+1{a}{junk}{b}");
            prop_assert!(E164Number::parse(&number).is_err());
        }

        #[test]
        fn any_utc_moment_round_trips(secs in 0i64..4_000_000_000) {
            let at = DateTime::from_timestamp(secs, 0).unwrap();
            let text = at.to_rfc3339_opts(SecondsFormat::Secs, true);
            prop_assert_eq!(UtcTimestamp::parse(&text).unwrap().as_datetime(), at);
        }

        #[test]
        fn parsers_never_panic(s in "\\PC*") {
            let _ = CallId::parse(&s);
            let _ = E164Number::parse(&s);
            let _ = UtcTimestamp::parse(&s);
            let _ = RecordingUrl::parse(&s);
            let _ = HttpsUrl::parse(&s);
            let _ = EmailAddress::parse(&s);
            let _ = PartnerId::parse(&s);
        }
    }
}
