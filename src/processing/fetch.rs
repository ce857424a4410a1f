//! Downloading a call's recording from the partner's URL to a temporary file.
//!
//! The body is streamed to disk, never held in memory, and bounded in size and time. Every
//! failure is classified as retryable (the partner's server may recover) or permanent, and its
//! message is written for the partner: it ends up in their callback.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, Response, StatusCode};
use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;
use tokio::io::AsyncWriteExt;

use crate::net::{redact_url, ClientOptions, NetError, OutboundClient, OutboundPolicy};

/// How many leading bytes of a recording are kept for format detection.
pub const HEADER_LEN: usize = 64;

/// Each write to a tokio file is a trip to the blocking pool; batch them.
const WRITE_BUFFER: usize = 256 * 1024;

/// Limits and trust settings of recording downloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchSettings {
    /// Largest recording accepted, in bytes.
    pub max_bytes: u64,
    /// Time allowed to establish the TCP and TLS connection.
    pub connect_timeout: Duration,
    /// Time allowed for the whole download, redirects and body included.
    pub total_timeout: Duration,
    /// Allow recording URLs on private and loopback addresses (on-premise installs).
    pub allow_private: bool,
    /// Extra root certificates (PEM bundle) for partners whose servers use a private CA.
    pub extra_ca_file: Option<PathBuf>,
}

impl Default for FetchSettings {
    fn default() -> Self {
        Self {
            max_bytes: 1024 * 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            total_timeout: Duration::from_secs(300),
            allow_private: false,
            extra_ca_file: None,
        }
    }
}

/// A downloaded recording. The file is deleted when this value is dropped.
#[derive(Debug)]
pub struct FetchedRecording {
    pub file: NamedTempFile,
    pub bytes: u64,
    /// SHA-256 of the body, lowercase hex.
    pub sha256: String,
    /// The `Content-Type` the server claimed; the format is detected from `header` instead.
    pub content_type: Option<String>,
    /// The first (up to) 64 bytes of the body, for format detection.
    pub header: Vec<u8>,
}

/// Why a recording could not be fetched. The message is shown to the partner, so it names the
/// URL only redacted and never carries internal detail.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Retryable.
    #[error("could not connect to the recording URL {url}")]
    Connect { url: String },
    /// Retryable: connecting or downloading took longer than allowed.
    #[error("recording download timed out")]
    Timeout,
    /// Retryable: the connection broke off during the download.
    #[error("recording download was interrupted")]
    Interrupted,
    /// Retryable: 5xx.
    #[error("recording URL answered {}", describe(*status))]
    ServerError { status: StatusCode },
    /// Retryable: 429, with the server's Retry-After if it sent one.
    #[error("recording URL answered 429 Too Many Requests{}", retry_after_suffix(*retry_after))]
    RateLimited { retry_after: Option<Duration> },
    /// Permanent: 4xx other than 429, or any other status that is neither success, 5xx nor
    /// a redirect.
    #[error("recording URL answered {}", describe(*status))]
    Rejected { status: StatusCode },
    /// Permanent: a 3xx whose Location could not be followed (missing, or not an http(s)
    /// URL that the HTTP client can resolve, such as `file:///…`).
    #[error("recording URL answered {} with a redirect that cannot be followed", describe(*status))]
    UnfollowableRedirect { status: StatusCode },
    /// Permanent.
    #[error("recording is larger than {max_bytes} bytes")]
    TooLarge { max_bytes: u64 },
    /// Permanent: the URL, a redirect, or every address its host resolves to is private,
    /// loopback or otherwise non-public.
    #[error("recording URL points to a private or loopback address")]
    ForbiddenAddress,
    /// Permanent.
    #[error("recording URL redirected more than {max} times")]
    TooManyRedirects { max: usize },
    /// Permanent: the URL or a redirect uses a scheme other than http and https.
    #[error("recording URL must use http or https, not {scheme}")]
    UnsupportedScheme { scheme: String },
    /// Permanent.
    #[error("recording URL is not a valid URL")]
    InvalidUrl,
    /// Retryable: our side could not store the download (e.g. disk full).
    #[error("the recording could not be stored (internal error)")]
    Storage(#[source] std::io::Error),
}

impl FetchError {
    /// Whether a later attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            FetchError::Connect { .. }
            | FetchError::Timeout
            | FetchError::Interrupted
            | FetchError::ServerError { .. }
            | FetchError::RateLimited { .. }
            | FetchError::Storage(_) => true,
            FetchError::Rejected { .. }
            | FetchError::UnfollowableRedirect { .. }
            | FetchError::TooLarge { .. }
            | FetchError::ForbiddenAddress
            | FetchError::TooManyRedirects { .. }
            | FetchError::UnsupportedScheme { .. }
            | FetchError::InvalidUrl => false,
        }
    }

    /// How long the server asked us to wait (Retry-After of a 429), if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    fn from_net(error: &NetError, url: &str) -> Self {
        match error {
            NetError::ForbiddenAddress { .. } => FetchError::ForbiddenAddress,
            NetError::UnsupportedScheme { scheme } => FetchError::UnsupportedScheme {
                scheme: scheme.clone(),
            },
            NetError::InvalidUrl { .. } | NetError::MissingHost => FetchError::InvalidUrl,
            NetError::TooManyRedirects { max } => FetchError::TooManyRedirects { max: *max },
            NetError::Resolve { .. }
            | NetError::CaFile { .. }
            | NetError::CaCertificate { .. }
            | NetError::Client(_) => FetchError::Connect {
                url: redact_url(url),
            },
        }
    }

    /// Classifies an error of sending the request (before any status was seen).
    fn from_request(error: &reqwest::Error, url: &str) -> Self {
        if let Some(net) = NetError::find_in(error) {
            return FetchError::from_net(net, url);
        }
        if error.is_timeout() {
            FetchError::Timeout
        } else if error.is_connect() {
            FetchError::Connect {
                url: redact_url(url),
            }
        } else {
            FetchError::Interrupted
        }
    }

    /// Classifies an error while reading the body.
    fn from_body(error: &reqwest::Error) -> Self {
        if error.is_timeout() {
            FetchError::Timeout
        } else {
            FetchError::Interrupted
        }
    }
}

/// "404 Not Found", or just the code when it has no standard reason phrase.
fn describe(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

fn retry_after_suffix(retry_after: Option<Duration>) -> String {
    retry_after
        .map(|wait| format!(" (retry after {} s)", wait.as_secs()))
        .unwrap_or_default()
}

/// Downloads recordings under one [`FetchSettings`]; cheap to share between workers.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: OutboundClient,
    max_bytes: u64,
}

impl Fetcher {
    pub fn new(config: FetchSettings) -> Result<Self, NetError> {
        Self::with_test_loopback_ports(config, Vec::new())
    }

    /// For tests only: like [`new`](Self::new), but IP-literal URLs to these loopback ports
    /// are allowed even with `allow_private` off (see
    /// [`OutboundPolicy::allowed_loopback_ports`]), so a test can serve an allowed first hop
    /// from 127.0.0.1.
    pub fn with_test_loopback_ports(
        config: FetchSettings,
        allowed_loopback_ports: Vec<u16>,
    ) -> Result<Self, NetError> {
        let policy = OutboundPolicy {
            allow_private: config.allow_private,
            allowed_loopback_ports,
        };
        let options = ClientOptions {
            connect_timeout: config.connect_timeout,
            total_timeout: config.total_timeout,
            extra_ca_file: config.extra_ca_file,
            follow_redirects: true,
        };
        Ok(Self {
            client: OutboundClient::new(policy, &options)?,
            max_bytes: config.max_bytes,
        })
    }

    /// Downloads `url` to a temporary file, following up to five redirects.
    #[tracing::instrument(skip_all, fields(url = %redact_url(url)))]
    pub async fn fetch(&self, url: &str) -> Result<FetchedRecording, FetchError> {
        let request = self
            .client
            .request(Method::GET, url)
            .map_err(|error| FetchError::from_net(&error, url))?;
        let response = request
            .send()
            .await
            .map_err(|error| FetchError::from_request(&error, url))?;
        check_status(&response)?;
        if let Some(length) = response.content_length() {
            if length > self.max_bytes {
                return Err(FetchError::TooLarge {
                    max_bytes: self.max_bytes,
                });
            }
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let recording = self.stream_to_file(response, content_type).await?;
        tracing::debug!(
            bytes = recording.bytes,
            sha256 = %recording.sha256,
            "recording fetched"
        );
        Ok(recording)
    }

    async fn stream_to_file(
        &self,
        response: Response,
        content_type: Option<String>,
    ) -> Result<FetchedRecording, FetchError> {
        let file = NamedTempFile::new().map_err(FetchError::Storage)?;
        let handle = file.as_file().try_clone().map_err(FetchError::Storage)?;
        let mut writer =
            tokio::io::BufWriter::with_capacity(WRITE_BUFFER, tokio::fs::File::from_std(handle));
        let mut hasher = Sha256::new();
        let mut header = Vec::with_capacity(HEADER_LEN);
        let mut bytes: u64 = 0;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|error| FetchError::from_body(&error))?;
            bytes += chunk.len() as u64;
            // Checked per chunk because a server may send no Content-Length, or lie in it.
            if bytes > self.max_bytes {
                return Err(FetchError::TooLarge {
                    max_bytes: self.max_bytes,
                });
            }
            hasher.update(&chunk);
            let wanted = HEADER_LEN.saturating_sub(header.len()).min(chunk.len());
            header.extend_from_slice(&chunk[..wanted]);
            writer
                .write_all(&chunk)
                .await
                .map_err(FetchError::Storage)?;
        }
        // No fsync: the file only lives until this process has analysed it.
        writer.flush().await.map_err(FetchError::Storage)?;
        Ok(FetchedRecording {
            file,
            bytes,
            sha256: hex::encode(hasher.finalize()),
            content_type,
            header,
        })
    }
}

fn check_status(response: &Response) -> Result<(), FetchError> {
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else if status == StatusCode::TOO_MANY_REQUESTS {
        Err(FetchError::RateLimited {
            retry_after: retry_after(response),
        })
    } else if status.is_server_error() {
        Err(FetchError::ServerError { status })
    } else if status.is_redirection() {
        // The redirect policy follows or refuses every redirect it is shown; a 3xx only gets
        // here when the client could not even turn its Location into a request.
        Err(FetchError::UnfollowableRedirect { status })
    } else {
        Err(FetchError::Rejected { status })
    }
}

fn retry_after(response: &Response) -> Option<Duration> {
    crate::net::retry_after(response.headers().get(RETRY_AFTER)?.to_str().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_status_the_way_a_partner_reads_it() {
        assert_eq!(
            FetchError::Rejected {
                status: StatusCode::NOT_FOUND
            }
            .to_string(),
            "recording URL answered 404 Not Found"
        );
        assert_eq!(
            FetchError::ServerError {
                status: StatusCode::from_u16(599).unwrap()
            }
            .to_string(),
            "recording URL answered 599"
        );
        assert_eq!(
            FetchError::RateLimited {
                retry_after: Some(Duration::from_secs(7))
            }
            .to_string(),
            "recording URL answered 429 Too Many Requests (retry after 7 s)"
        );
        assert_eq!(
            FetchError::TooLarge { max_bytes: 10 }.to_string(),
            "recording is larger than 10 bytes"
        );
    }

    #[test]
    fn the_default_limit_is_one_gibibyte() {
        assert_eq!(FetchSettings::default().max_bytes, 1 << 30);
    }

    #[test]
    fn transient_failures_are_retryable_and_permanent_ones_are_not() {
        assert!(FetchError::Timeout.is_retryable());
        assert!(FetchError::ServerError {
            status: StatusCode::BAD_GATEWAY
        }
        .is_retryable());
        assert!(FetchError::RateLimited { retry_after: None }.is_retryable());
        assert!(!FetchError::Rejected {
            status: StatusCode::FORBIDDEN
        }
        .is_retryable());
        assert!(!FetchError::ForbiddenAddress.is_retryable());
        assert!(!FetchError::TooLarge { max_bytes: 1 }.is_retryable());
        assert!(!FetchError::TooManyRedirects { max: 5 }.is_retryable());
    }
}
