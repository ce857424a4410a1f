//! The one place the service starts an HTTP client: recording downloads and callbacks (through
//! [`crate::net`]), the OpenAI-compatible transcription engine and the benchmarks all begin
//! with [`builder`] or [`builder_trusting`].
//!
//! reqwest is built with `rustls-no-provider` (no OpenSSL, no aws-lc), so a client built the
//! plain way panics unless a rustls crypto provider was installed for the whole process first.
//! The builders here hand reqwest a finished rustls configuration instead, with the `ring`
//! provider passed in: they work whatever the process did or did not install, and install
//! nothing themselves.
//!
//! What is trusted is decided here too, and kept as it was with reqwest 0.12: the Mozilla root
//! store compiled into the binary (`webpki-roots`) plus the roots the operator adds
//! (`CALLINGEST_EXTRA_CA_FILE`). reqwest 0.13 would otherwise use the host's certificate store
//! through the platform verifier, which would make what callbacks and downloads trust depend on
//! the image the service runs in (a slim image without `ca-certificates` would trust nothing).

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

/// A client builder trusting the bundled Mozilla roots only.
pub fn builder() -> reqwest::ClientBuilder {
    with_roots(bundled_roots())
}

/// A client builder trusting the bundled Mozilla roots and `extra_roots` (e.g. a partner's
/// private CA). Fails when one of `extra_roots` is not a usable CA certificate.
pub fn builder_trusting(
    extra_roots: impl IntoIterator<Item = CertificateDer<'static>>,
) -> Result<reqwest::ClientBuilder, rustls::Error> {
    let mut roots = bundled_roots();
    for certificate in extra_roots {
        roots.add(certificate)?;
    }
    Ok(with_roots(roots))
}

fn bundled_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

fn with_roots(roots: RootCertStore) -> reqwest::ClientBuilder {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    // reqwest leaves ALPN to a preconfigured TLS setup. HTTP/1.1 only, as before the move to
    // 0.13: partners' servers have only ever been spoken to in HTTP/1.1.
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder().tls_backend_preconfigured(tls)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// An HTTPS server on 127.0.0.1 with a self-signed certificate, answering every connection
    /// `200 OK` after reading the request head. Returns its URL and the certificate.
    async fn self_signed_server() -> (String, CertificateDer<'static>) {
        let issued = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
            .expect("a self-signed certificate");
        let certificate = issued.cert.der().clone();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(
            rustls::pki_types::PrivatePkcs8KeyDer::from(issued.key_pair.serialize_der()),
        );
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certificate.clone()], key)
        .expect("the certificate and key");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A handshake the client refuses ends here.
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let mut head = [0u8; 1024];
                    let _ = tls.read(&mut head).await;
                    let _ = tls
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        (url, certificate)
    }

    #[tokio::test]
    async fn only_the_bundled_roots_and_the_extra_ones_are_trusted() {
        let (url, certificate) = self_signed_server().await;

        let bundled_only = builder().timeout(Duration::from_secs(10)).build().unwrap();
        let error = bundled_only.get(&url).send().await.unwrap_err();
        assert!(error.is_connect(), "{error:?}");

        let trusting = builder_trusting([certificate])
            .unwrap()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let response = trusting.get(&url).send().await.expect("a trusted server");
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), reqwest::Version::HTTP_11);
        assert_eq!(response.text().await.unwrap(), "ok");
    }

    /// Nothing in this test binary installs a process-wide provider: were the builders to rely
    /// on one, building would panic here.
    #[test]
    fn clients_build_without_a_process_wide_crypto_provider() {
        assert!(rustls::crypto::CryptoProvider::get_default().is_none());
        builder().build().expect("a client");
        assert!(rustls::crypto::CryptoProvider::get_default().is_none());
    }

    #[test]
    fn the_mozilla_roots_are_bundled() {
        assert!(bundled_roots().len() > 100);
    }

    #[test]
    fn a_certificate_that_is_not_one_is_refused() {
        let garbage = CertificateDer::from(b"not a certificate".to_vec());
        assert!(builder_trusting([garbage]).is_err());
    }
}
