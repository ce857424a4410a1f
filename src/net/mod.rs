//! Outbound HTTP to partner-supplied URLs: recording downloads now, callbacks later.
//!
//! A partner URL must never reach the service's own network. Three checks together close
//! every path a request can take: the URL itself (an IP-literal host never reaches a resolver),
//! every redirect hop, and every address a host name resolves to (checked in the resolver, so
//! the address that is checked is the address that is connected to, which defeats DNS
//! rebinding).

mod address;
mod client;
mod redact;
mod resolver;

pub use address::is_forbidden;
pub use client::{build_client, ClientOptions, OutboundClient, OutboundPolicy, MAX_REDIRECTS};
pub use redact::redact_url;

/// A `Retry-After` value: delay-seconds or an HTTP date (a date in the past means now).
pub fn retry_after(value: &str) -> Option<std::time::Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(std::time::Duration::from_secs(seconds));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = date.signed_duration_since(chrono::Utc::now());
    Some(wait.to_std().unwrap_or(std::time::Duration::ZERO))
}

use std::path::PathBuf;

/// Everything that can go wrong preparing or policing an outbound request.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The URL names, or its host resolves only to, a private, loopback or otherwise
    /// non-public address.
    #[error("{target} is a private, loopback or otherwise non-public address")]
    ForbiddenAddress { target: String },
    #[error("only http and https URLs are allowed, not {scheme}")]
    UnsupportedScheme { scheme: String },
    #[error("not a valid URL: {reason}")]
    InvalidUrl { reason: String },
    #[error("the URL has no host")]
    MissingHost,
    #[error("more than {max} redirects")]
    TooManyRedirects { max: usize },
    #[error("could not resolve {host}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not read the CA file {}", path.display())]
    CaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the CA file {} holds no usable PEM certificate", path.display())]
    CaCertificate {
        path: PathBuf,
        /// A PEM block that does not parse, or a certificate rustls cannot use as a root.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    #[error("could not build the HTTP client")]
    Client(#[source] reqwest::Error),
}

impl NetError {
    /// Finds a `NetError` raised by the resolver or the redirect policy inside a
    /// `reqwest::Error`, where reqwest keeps it as a (nested) source.
    pub fn find_in(error: &reqwest::Error) -> Option<&NetError> {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(err) = source {
            if let Some(net) = err.downcast_ref::<NetError>() {
                return Some(net);
            }
            source = err.source();
        }
        None
    }
}
