//! A real HTTPS callback receiver for tests: a private CA made with rcgen, a leaf certificate
//! for 127.0.0.1 and localhost, and a minimal HTTP/1.1 server on tokio-rustls that answers
//! from a script and records every request. No database needed.
//!
//! Connections are kept alive, as real receivers do: several requests may share one. An idle
//! connection is closed after `IDLE_TIMEOUT`, longer than the service keeps idle connections
//! (`net::client`), so the service never reuses one the receiver is about to drop.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// The path the receiver treats as the callback endpoint.
pub const HOOK_PATH: &str = "/hook";

/// Request heads above this size are refused (the connection is dropped).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Bodies above this size are refused (the connection is dropped).
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// A connection that has not completed its TLS handshake by then is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A kept-alive connection idle this long is closed (the service drops its idle ones sooner).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A self-signed CA for one test. Its certificate is written to a PEM file that lives as long
/// as the `TestCa`, for `CALLINGEST_EXTRA_CA_FILE` / `ClientOptions::extra_ca_file`.
pub struct TestCa {
    certificate: rcgen::Certificate,
    key: KeyPair,
    pem_file: tempfile::NamedTempFile,
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = KeyPair::generate().expect("generate the test CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, "callingest test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let certificate = params.self_signed(&key).expect("self-sign the test CA");

        let mut pem_file = tempfile::Builder::new()
            .prefix("callingest-test-ca-")
            .suffix(".pem")
            .tempfile()
            .expect("create the CA file");
        pem_file
            .write_all(certificate.pem().as_bytes())
            .and_then(|()| pem_file.flush())
            .expect("write the CA file");
        TestCa {
            certificate,
            key,
            pem_file,
        }
    }

    /// The PEM file holding the CA certificate.
    pub fn ca_file(&self) -> &Path {
        self.pem_file.path()
    }

    /// The CA certificate as PEM text.
    pub fn certificate_pem(&self) -> String {
        self.certificate.pem()
    }

    /// A server certificate for 127.0.0.1 and localhost signed by this CA, with its key.
    fn issue_server_certificate(&self) -> (rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate().expect("generate the server key");
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("server certificate parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, "callingest test receiver");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let certificate = params
            .signed_by(&key, &self.certificate, &self.key)
            .expect("sign the server certificate");
        (certificate, key)
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// How the receiver answers one callback.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Answer this status with an empty body.
    Status(u16),
    /// Answer this status with these extra headers, e.g. `(429, [("retry-after", "2")])`.
    StatusWithHeaders(u16, Vec<(String, String)>),
    /// Wait (after the whole request has been received and recorded), then answer this status.
    Delayed(Duration, u16),
    /// Answer 302 with this `Location`.
    Redirect(String),
}

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
pub struct ReceivedRequest {
    pub method: String,
    /// The request target as sent, query included.
    pub path: String,
    /// In arrival order, names lowercased, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked if it was sent chunked.
    pub body: Vec<u8>,
    /// When the whole request had been read.
    pub received_at: Instant,
}

impl ReceivedRequest {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, value)| value.as_str())
    }

    /// The body as JSON; panics with the body if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "the callback body is not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// An HTTPS server on 127.0.0.1 standing in for a partner's callback endpoint. Stops when
/// dropped.
pub struct Receiver {
    addr: SocketAddr,
    state: Arc<State>,
    server: JoinHandle<()>,
}

struct State {
    script: Vec<Reply>,
    inner: Mutex<Recorded>,
    arrived: Notify,
}

#[derive(Default)]
struct Recorded {
    requests: Vec<ReceivedRequest>,
    /// Callbacks (`POST /hook`) answered so far: the index of the next scripted reply.
    callbacks: usize,
}

impl Receiver {
    /// HTTPS on 127.0.0.1:0 with a certificate for 127.0.0.1 and localhost signed by `ca`.
    /// `POST /hook` is the callback path: its replies follow `script` in order, and once the
    /// script is used up its last reply repeats (an empty script answers 200). Any other
    /// method or path is recorded too and answered 404 without using the script.
    pub async fn start(ca: &TestCa, script: Vec<Reply>) -> Receiver {
        let script = if script.is_empty() {
            vec![Reply::Status(200)]
        } else {
            script
        };
        let (certificate, key) = ca.issue_server_certificate();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![certificate.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .expect("the server certificate and key");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));

        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("the bound address");
        let state = Arc::new(State {
            script,
            inner: Mutex::new(Recorded::default()),
            arrived: Notify::new(),
        });
        let server = tokio::spawn(accept_loop(listener, acceptor, state.clone()));
        Receiver {
            addr,
            state,
            server,
        }
    }

    /// `https://127.0.0.1:PORT/hook`.
    pub fn url(&self) -> String {
        format!("https://{}{HOOK_PATH}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every request received so far, callbacks and others, in arrival order.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.state.inner.lock().unwrap().requests.clone()
    }

    /// Waits until at least `n` requests have arrived and returns all of them; panics with a
    /// clear message if they have not arrived within `timeout`.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<ReceivedRequest> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before the check, so an arrival in between is not missed.
            let arrived = self.state.arrived.notified();
            let requests = self.requests();
            if requests.len() >= n {
                return requests;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                let requests = self.requests();
                let seen: Vec<String> = requests
                    .iter()
                    .map(|r| format!("{} {}", r.method, r.path))
                    .collect();
                panic!(
                    "the callback receiver at {} expected {n} request(s) within {timeout:?} \
                     but got {}: {seen:?}",
                    self.url(),
                    requests.len()
                );
            }
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // Dropping the accept loop drops its JoinSet, which aborts open connections.
        self.server.abort();
    }
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, acceptor.clone(), state.clone()));
                }
                Err(error) => eprintln!("callback receiver: accept failed: {error}"),
            },
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Serves the requests of one connection, recording each and answering from the script.
/// Errors (a failed handshake, a client that goes away) end the connection silently: a test
/// sees them as missing requests.
async fn serve_connection(stream: TcpStream, acceptor: TlsAcceptor, state: Arc<State>) {
    let Ok(Ok(tls)) = tokio::time::timeout(READ_TIMEOUT, acceptor.accept(stream)).await else {
        return;
    };
    let mut connection = Connection {
        stream: tls,
        buffer: Vec::new(),
    };
    while let Ok(Ok(Some(request))) =
        tokio::time::timeout(IDLE_TIMEOUT, connection.read_request()).await
    {
        let (delay, status, headers) = match state.record(request) {
            Some(Reply::Status(status)) => (Duration::ZERO, status, Vec::new()),
            Some(Reply::StatusWithHeaders(status, headers)) => (Duration::ZERO, status, headers),
            Some(Reply::Delayed(delay, status)) => (delay, status, Vec::new()),
            Some(Reply::Redirect(location)) => {
                (Duration::ZERO, 302, vec![("location".to_owned(), location)])
            }
            None => (Duration::ZERO, 404, Vec::new()),
        };
        tokio::time::sleep(delay).await;
        let head = response_head(status, &headers);
        let stream = &mut connection.stream;
        if stream.write_all(head.as_bytes()).await.is_err() || stream.flush().await.is_err() {
            return;
        }
    }
    // Sends TLS close_notify, then closes our side.
    let _ = connection.stream.shutdown().await;
}

impl State {
    /// Records `request` and picks its reply: the next scripted one for a callback, none (404)
    /// for anything else.
    fn record(&self, request: ReceivedRequest) -> Option<Reply> {
        let is_callback =
            request.method == "POST" && request.path.split('?').next() == Some(HOOK_PATH);
        let mut inner = self.inner.lock().unwrap();
        let reply = is_callback.then(|| {
            let index = inner.callbacks.min(self.script.len() - 1);
            inner.callbacks += 1;
            self.script[index].clone()
        });
        inner.requests.push(request);
        drop(inner);
        self.arrived.notify_waiters();
        reply
    }
}

fn response_head(status: u16, headers: &[(String, String)]) -> String {
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|code| code.canonical_reason())
        .unwrap_or("Unknown");
    let mut head = format!("HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// A stream with the bytes read past what has been consumed so far.
struct Connection<S> {
    stream: S,
    buffer: Vec<u8>,
}

impl<S: AsyncRead + tokio::io::AsyncWrite + Unpin> Connection<S> {
    /// One HTTP/1.1 request, or `None` if the client closed before sending anything.
    async fn read_request(&mut self) -> std::io::Result<Option<ReceivedRequest>> {
        if self.buffer.is_empty() && self.fill().await? == 0 {
            return Ok(None);
        }
        let head = self.read_until(b"\r\n\r\n", MAX_HEAD_BYTES).await?;
        let head = String::from_utf8_lossy(&head);
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default();
        let mut parts = request_line.split(' ');
        let (Some(method), Some(path), Some(_version)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid(format!("bad request line {request_line:?}")));
        };
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        let value_of = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };

        if value_of("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
            self.stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await?;
        }
        let body = if value_of("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            self.read_chunked_body().await?
        } else if let Some(length) = value_of("content-length") {
            let length: usize = length
                .parse()
                .map_err(|_| invalid(format!("bad content-length {length:?}")))?;
            if length > MAX_BODY_BYTES {
                return Err(invalid(format!("body of {length} bytes is too large")));
            }
            self.take(length).await?
        } else {
            Vec::new()
        };
        Ok(Some(ReceivedRequest {
            method: method.to_owned(),
            path: path.to_owned(),
            headers,
            body,
            received_at: Instant::now(),
        }))
    }

    async fn read_chunked_body(&mut self) -> std::io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.read_until(b"\r\n", MAX_HEAD_BYTES).await?;
            let line = String::from_utf8_lossy(&line);
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| invalid(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                // Trailers, if any, up to the empty line.
                while !self.read_until(b"\r\n", MAX_HEAD_BYTES).await?.is_empty() {}
                return Ok(body);
            }
            if body.len() + size > MAX_BODY_BYTES {
                return Err(invalid("chunked body is too large".to_owned()));
            }
            body.extend(self.take(size).await?);
            if self.take(2).await? != b"\r\n" {
                return Err(invalid("chunk not followed by CRLF".to_owned()));
            }
        }
    }

    /// The bytes before the next `delimiter`, which is consumed too.
    async fn read_until(&mut self, delimiter: &[u8], limit: usize) -> std::io::Result<Vec<u8>> {
        let mut searched = 0;
        loop {
            if let Some(at) = self.buffer[searched..]
                .windows(delimiter.len())
                .position(|window| window == delimiter)
            {
                let end = searched + at;
                let found = self.buffer[..end].to_vec();
                self.buffer.drain(..end + delimiter.len());
                return Ok(found);
            }
            if self.buffer.len() > limit {
                return Err(invalid("line or head too long".to_owned()));
            }
            // The delimiter may straddle the old end of the buffer.
            searched = self.buffer.len().saturating_sub(delimiter.len() - 1);
            if self.fill().await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    async fn take(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        while self.buffer.len() < n {
            if self.fill().await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(self.buffer.drain(..n).collect())
    }

    async fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0; 16 * 1024];
        let read = self.stream.read(&mut chunk).await?;
        self.buffer.extend_from_slice(&chunk[..read]);
        Ok(read)
    }
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}
