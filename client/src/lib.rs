//! Rust client of the callingest API, generated at build time by progenitor from the service's
//! published OpenAPI document (`openapi/openapi.json`); see `README.md` beside this crate.
//!
//! Every operation of the document is a method of [`Client`] returning a request builder:
//! `client.get_call().call_id(..).send().await`. Credentials are declared once by the document
//! (security schemes), not per operation: build the client with them once, with
//! [`partner_client`] (or [`admin_client`] for the support operations). Every error answer
//! decodes into [`types::ErrorBody`] (`Error::ErrorResponse`), with the field paths of a 422 in
//! `errors`.

mod generated {
    #![allow(
        clippy::all,
        clippy::pedantic,
        dead_code,
        missing_docs,
        unused_imports,
        unused_mut
    )]

    /// The generated `Client::new` builds its HTTP client with `reqwest::ClientBuilder::new()`.
    /// This module stands in for `reqwest` in the generated code so that builder comes from
    /// [`crate::http_client_builder`], which picks the TLS crypto provider first.
    mod reqwest {
        pub use ::reqwest::*;

        pub struct ClientBuilder;

        impl ClientBuilder {
            pub fn new() -> ::reqwest::ClientBuilder {
                crate::http_client_builder()
            }
        }
    }

    include!(concat!(env!("OUT_DIR"), "/codegen.rs"));
}

pub use generated::*;

/// A `reqwest` client builder ready for HTTPS, for [`Client::new_with_client`] (e.g. to add
/// default headers or change timeouts). [`Client::new`] uses it too.
///
/// TLS is rustls with the `ring` crypto provider: no OpenSSL, no aws-lc. The provider is
/// installed as the process default unless the application installed one already.
pub fn http_client_builder() -> ::reqwest::ClientBuilder {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err only when another thread installed one meanwhile: that one serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    ::reqwest::ClientBuilder::new()
}

/// Why a client with credentials could not be built: a credential that cannot be a header
/// value, or the HTTP client failing to build.
pub type BuildError = Box<dyn std::error::Error + Send + Sync>;

/// A client sending the partner's credentials (`x-partner-id`, `x-api-key`) with every request.
pub fn partner_client(
    base_url: &str,
    partner_id: &str,
    api_key: &str,
) -> Result<Client, BuildError> {
    let mut headers = ::reqwest::header::HeaderMap::new();
    headers.insert("x-partner-id", header_value(partner_id, false)?);
    headers.insert("x-api-key", header_value(api_key, true)?);
    with_headers(base_url, headers)
}

/// A client sending `Authorization: Bearer <token>` (the service's `CALLINGEST_ADMIN_TOKEN`)
/// with every request, for the support operations.
pub fn admin_client(base_url: &str, admin_token: &str) -> Result<Client, BuildError> {
    let mut headers = ::reqwest::header::HeaderMap::new();
    headers.insert(
        ::reqwest::header::AUTHORIZATION,
        header_value(&format!("Bearer {admin_token}"), true)?,
    );
    with_headers(base_url, headers)
}

/// The timeouts of the generated `Client::new` (15 s), with `headers` on every request.
fn with_headers(
    base_url: &str,
    headers: ::reqwest::header::HeaderMap,
) -> Result<Client, BuildError> {
    let timeout = std::time::Duration::from_secs(15);
    let http = http_client_builder()
        .connect_timeout(timeout)
        .timeout(timeout)
        .default_headers(headers)
        .build()?;
    Ok(Client::new_with_client(base_url, http))
}

/// A header value; secret ones are marked sensitive (left out of debug output).
fn header_value(text: &str, secret: bool) -> Result<::reqwest::header::HeaderValue, BuildError> {
    let mut value = ::reqwest::header::HeaderValue::from_str(text)?;
    value.set_sensitive(secret);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::Client;

    /// reqwest is built without a crypto provider of its own: without the stand-in above,
    /// `Client::new` would panic in a process that installed none.
    #[test]
    fn a_client_is_built_in_a_process_without_a_crypto_provider() {
        assert!(rustls::crypto::CryptoProvider::get_default().is_none());
        let _client = Client::new("https://callingest.invalid");
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
