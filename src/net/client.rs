//! The configured `reqwest::Client` and the URL checks that the resolver cannot do.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::redirect::{Attempt, Policy};
use reqwest::{Method, RequestBuilder, Url};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::resolver::FilteringResolver;
use super::{is_forbidden, redact_url, NetError};

/// Redirects followed before a request fails; a partner's storage needs one or two.
pub const MAX_REDIRECTS: usize = 5;

/// Which destinations outbound requests may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundPolicy {
    /// Allow private, loopback and other non-public addresses (on-premise installs whose
    /// partners serve recordings from the local network). Off in a normal deployment.
    pub allow_private: bool,
    /// For tests only, leave empty otherwise: loopback ports that an IP-literal URL
    /// (`http://127.0.0.1:PORT/`) may reach even when `allow_private` is off, so that a test
    /// can show a redirect from an allowed first hop to a forbidden second hop being refused
    /// without any non-loopback address. Names that resolve to loopback stay refused: the
    /// resolver does not see the port.
    pub allowed_loopback_ports: Vec<u16>,
}

impl OutboundPolicy {
    /// Checks what reqwest will not ask the resolver about: the scheme and an IP-literal host.
    /// Host names pass here and are judged by the resolver on every connection.
    ///
    /// The URL parser has already normalised the other spellings of an IPv4 address
    /// (`http://2130706433/`, `http://0x7f.1/`, `http://127.1/`) to `127.0.0.1`, so they are
    /// IP literals by the time they get here.
    pub fn check_url(&self, url: &Url) -> Result<(), NetError> {
        match url.scheme() {
            "http" | "https" => {}
            other => {
                return Err(NetError::UnsupportedScheme {
                    scheme: other.to_owned(),
                })
            }
        }
        let Some(ip) = ip_literal_host(url)? else {
            return Ok(());
        };
        if self.allow_private || !is_forbidden(ip) || self.is_allowed_test_port(ip, url) {
            return Ok(());
        }
        Err(NetError::ForbiddenAddress {
            target: ip.to_string(),
        })
    }

    fn is_allowed_test_port(&self, ip: IpAddr, url: &Url) -> bool {
        ip.is_loopback()
            && url
                .port_or_known_default()
                .is_some_and(|port| self.allowed_loopback_ports.contains(&port))
    }

    /// Re-applies [`check_url`](Self::check_url) to every hop, because a public URL may
    /// redirect to a private one.
    fn redirect_policy(&self) -> Policy {
        let policy = self.clone();
        Policy::custom(move |attempt: Attempt| {
            // `previous` starts with the original URL, so its length counts redirects so far.
            if attempt.previous().len() > MAX_REDIRECTS {
                return attempt.error(NetError::TooManyRedirects { max: MAX_REDIRECTS });
            }
            match policy.check_url(attempt.url()) {
                Ok(()) => {
                    tracing::debug!(to = %redact_url(attempt.url().as_str()), "following redirect");
                    attempt.follow()
                }
                Err(error) => {
                    tracing::warn!(to = %redact_url(attempt.url().as_str()), %error, "refused redirect");
                    attempt.error(error)
                }
            }
        })
    }
}

/// The host of `url` if it is an IP literal. The parser has normalised every literal to its
/// canonical text (IPv6 in brackets), so a host that does not parse as an address is a name.
fn ip_literal_host(url: &Url) -> Result<Option<IpAddr>, NetError> {
    let host = url.host_str().ok_or(NetError::MissingHost)?;
    let unbracketed = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Ok(unbracketed.parse().ok())
}

/// Connection settings of the outbound client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Time allowed to establish the TCP and TLS connection.
    pub connect_timeout: Duration,
    /// Time allowed for the whole exchange, body included.
    pub total_timeout: Duration,
    /// A PEM bundle of extra root certificates, for partners whose servers use a private CA.
    /// The bundled Mozilla roots stay trusted (see [`crate::http_client`]); certificate checks
    /// cannot be switched off.
    pub extra_ca_file: Option<PathBuf>,
    /// Follow redirects (at most [`MAX_REDIRECTS`], each hop checked like the first URL), as
    /// recording downloads do. Off for callbacks: a 3xx then comes back as the response.
    pub follow_redirects: bool,
}

/// A `reqwest::Client` that refuses forbidden addresses when resolving and on every redirect.
///
/// It cannot check an IP-literal URL before the first request (reqwest connects to literals
/// without resolving), so send requests through [`OutboundClient`], or call
/// [`OutboundPolicy::check_url`] first.
pub fn build_client(
    policy: &OutboundPolicy,
    options: &ClientOptions,
) -> Result<reqwest::Client, NetError> {
    let builder = match &options.extra_ca_file {
        None => crate::http_client::builder(),
        Some(path) => {
            crate::http_client::builder_trusting(read_ca_bundle(path)?).map_err(|source| {
                NetError::CaCertificate {
                    path: path.to_owned(),
                    source: Some(Box::new(source)),
                }
            })?
        }
    };
    builder
        // A proxy would resolve and connect on our behalf, past the filtering resolver.
        .no_proxy()
        // reqwest's Referer keeps the query string, i.e. a presigned token, on redirects.
        .referer(false)
        .connect_timeout(options.connect_timeout)
        .timeout(options.total_timeout)
        // Reuse connections, but not ones idle long enough that the server may be closing them
        // (common keep-alive timeouts are 5 s and up): a POST on a dying connection would fail.
        .pool_idle_timeout(Duration::from_secs(4))
        .dns_resolver(Arc::new(FilteringResolver::new(policy.allow_private)))
        .redirect(if options.follow_redirects {
            policy.redirect_policy()
        } else {
            Policy::none()
        })
        .user_agent(concat!("callingest/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(NetError::Client)
}

fn read_ca_bundle(path: &Path) -> Result<Vec<CertificateDer<'static>>, NetError> {
    let pem = std::fs::read(path).map_err(|source| NetError::CaFile {
        path: path.to_owned(),
        source,
    })?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| NetError::CaCertificate {
            path: path.to_owned(),
            source: Some(Box::new(source)),
        })?;
    if certificates.is_empty() {
        return Err(NetError::CaCertificate {
            path: path.to_owned(),
            source: None,
        });
    }
    Ok(certificates)
}

/// The outbound client together with its policy, so that no request skips the check of its
/// first URL.
#[derive(Debug, Clone)]
pub struct OutboundClient {
    client: reqwest::Client,
    policy: OutboundPolicy,
}

impl OutboundClient {
    pub fn new(policy: OutboundPolicy, options: &ClientOptions) -> Result<Self, NetError> {
        let client = build_client(&policy, options)?;
        Ok(Self { client, policy })
    }

    pub fn policy(&self) -> &OutboundPolicy {
        &self.policy
    }

    /// Parses and checks `url`, then starts a request to it.
    pub fn request(&self, method: Method, url: &str) -> Result<RequestBuilder, NetError> {
        let parsed = Url::parse(url).map_err(|error| NetError::InvalidUrl {
            reason: error.to_string(),
        })?;
        self.policy.check_url(&parsed)?;
        Ok(self.client.request(method, parsed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(policy: &OutboundPolicy, url: &str) -> Result<(), NetError> {
        policy.check_url(&Url::parse(url).expect("a valid URL"))
    }

    fn refused(url: &str) -> bool {
        matches!(
            check(&OutboundPolicy::default(), url),
            Err(NetError::ForbiddenAddress { .. })
        )
    }

    #[test]
    fn the_url_parser_turns_odd_ipv4_spellings_into_plain_literals() {
        for url in [
            "http://2130706433/",
            "http://0x7f.1/",
            "http://127.1/",
            "http://0177.0.0.1/",
            "http://0x7f000001/",
            "http://127.0.0.1./",
        ] {
            let parsed = Url::parse(url).unwrap();
            assert_eq!(parsed.host_str(), Some("127.0.0.1"), "{url}");
        }
        let mapped = Url::parse("http://[::ffff:127.0.0.1]/").unwrap();
        assert_eq!(mapped.host_str(), Some("[::ffff:7f00:1]"));
    }

    #[test]
    fn ip_literal_urls_to_non_public_addresses_are_refused_in_every_spelling() {
        for url in [
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://127.1/",
            "http://0/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:169.254.169.254]/",
            "http://169.254.169.254/latest/meta-data/",
            "https://10.0.0.1/",
            "http://[fe80::1]/",
            "http://[fd00::1]:8080/",
        ] {
            assert!(refused(url), "{url} should be refused");
        }
    }

    #[test]
    fn public_literals_and_host_names_pass_the_url_check() {
        let policy = OutboundPolicy::default();
        for url in [
            "https://93.184.216.34/a.wav",
            "https://[2606:4700:4700::1111]/a.wav",
            "https://recordings.example.com/a.wav?token=x",
            // Names are judged by the resolver, which sees what they resolve to.
            "http://localhost/",
        ] {
            assert!(check(&policy, url).is_ok(), "{url} should pass");
        }
    }

    #[test]
    fn only_http_and_https_are_allowed() {
        for url in [
            "ftp://example.com/a.wav",
            "file:///etc/passwd",
            "gopher://example.com/",
        ] {
            assert!(
                matches!(
                    check(&OutboundPolicy::default(), url),
                    Err(NetError::UnsupportedScheme { .. })
                ),
                "{url} should be refused"
            );
        }
    }

    #[test]
    fn allow_private_lets_non_public_literals_through() {
        let policy = OutboundPolicy {
            allow_private: true,
            ..OutboundPolicy::default()
        };
        assert!(check(&policy, "http://127.0.0.1:8080/").is_ok());
        assert!(check(&policy, "http://[::1]/").is_ok());
    }

    #[test]
    fn a_test_loopback_port_exception_covers_only_that_port_on_loopback() {
        let policy = OutboundPolicy {
            allow_private: false,
            allowed_loopback_ports: vec![8080],
        };
        assert!(check(&policy, "http://127.0.0.1:8080/").is_ok());
        assert!(check(&policy, "http://[::1]:8080/").is_ok());
        assert!(check(&policy, "http://127.0.0.1:8081/").is_err());
        assert!(check(&policy, "http://10.0.0.1:8080/").is_err());
    }

    #[test]
    fn a_missing_ca_file_is_reported_with_its_path() {
        let options = ClientOptions {
            connect_timeout: Duration::from_secs(1),
            total_timeout: Duration::from_secs(1),
            extra_ca_file: Some("/nonexistent/ca.pem".into()),
            follow_redirects: true,
        };
        let error = build_client(&OutboundPolicy::default(), &options).unwrap_err();
        assert!(matches!(error, NetError::CaFile { .. }), "{error:?}");
        assert!(error.to_string().contains("/nonexistent/ca.pem"));
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "not a certificate\n").unwrap();
        let options = ClientOptions {
            connect_timeout: Duration::from_secs(1),
            total_timeout: Duration::from_secs(1),
            extra_ca_file: Some(file.path().to_owned()),
            follow_redirects: true,
        };
        let error = build_client(&OutboundPolicy::default(), &options).unwrap_err();
        assert!(matches!(error, NetError::CaCertificate { .. }), "{error:?}");
    }
}
