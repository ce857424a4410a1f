//! Rust client of the callingest API, generated at build time by progenitor from the service's
//! published OpenAPI document (`openapi/openapi.json`); see `README.md` beside this crate.
//!
//! Every operation of the document is a method of [`Client`] returning a request builder:
//! `client.get_call().x_partner_id(..).x_api_key(..).call_id(..).send().await`. Every error
//! answer decodes into [`types::ErrorBody`] (`Error::ErrorResponse`), with the field paths of a
//! 422 in `errors`.

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
