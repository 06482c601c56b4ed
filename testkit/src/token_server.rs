//! A loopback stand-in for the two VMware token endpoints the operator calls:
//!
//! - Cloud Partner Navigator: `POST /cphub/api/auth/v2/authn/authorize?orgId=..`, answering
//!   camelCase `{accessToken, idToken, refreshToken, returnUrl}`;
//! - CSP: `POST /csp/gateway/am/api/auth/token` with a form body, answering snake_case
//!   `{access_token, token_type, expires_in, ..}` and `CspErrorResponse` bodies on errors.
//!
//! - CSP's API-token exchange (`api-tokens/authorize`, `api-tokens/details`) and its
//!   `grant_type=refresh_token` with rotating refresh tokens: see [`grants`].
//!
//! Both live on one listener on 127.0.0.1, told apart by path. Tests can script misbehaviour
//! ([`Scripted`]): error statuses, malformed bodies, huge or never-ending bodies, hung or reset
//! connections, redirects and delays.
//!
//! The server speaks HTTP/1.1 itself on a plain [`TcpListener`] rather than through a web
//! framework, because several faults (hang, trickle, reset, streaming a huge body) need direct
//! control of the socket. Connections are kept alive between requests (the operator's client
//! pools them) unless the client asks to close or a fault ends the connection.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

mod grants;

pub use grants::{API_TOKEN_AUTHORIZE_PATH, API_TOKEN_DETAILS_PATH};

/// Path of the Cloud Partner Navigator token endpoint.
pub const NAVIGATOR_PATH: &str = "/cphub/api/auth/v2/authn/authorize";
/// Path of the CSP token endpoint.
pub const CSP_PATH: &str = "/csp/gateway/am/api/auth/token";

/// Largest request head (request line and headers) accepted, so a bad client cannot make the
/// server buffer without bound.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Largest request body accepted; token requests are a few hundred bytes.
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// A name in the reserved `.test` domain that the TLS certificate also covers. It resolves
/// nowhere, so a client reaches it only through [`crate::connect_proxy::ConnectProxy`], which
/// routes it here: proof that a request went through the proxy.
pub const PROXIED_HOST: &str = "token-endpoint.test";
/// The form media type both endpoints take.
const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

/// Source of unique token ids (`jti`) and CSP request ids. Process-wide rather than per server,
/// so tokens from two servers in one test never collide either.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Which of the two upstream endpoints a request or token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Cloud Partner Navigator, [`NAVIGATOR_PATH`].
    Navigator,
    /// VMware Cloud Services Platform, [`CSP_PATH`].
    Csp,
}

impl Endpoint {
    /// The request path of this endpoint.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Navigator => NAVIGATOR_PATH,
            Endpoint::Csp => CSP_PATH,
        }
    }
}

/// How a [`TokenServer`] starts out; most of it can be changed later through the handle.
#[derive(Debug, Clone)]
pub struct TokenServerConfig {
    /// Validity of issued access tokens (whole seconds are used). Default: one hour.
    pub lifetime: Duration,
    /// Client id the server accepts in the Basic authorization header.
    pub client_id: String,
    /// Client secret the server accepts; an empty string models a CSP public client, which
    /// sends `base64(client_id:)`.
    pub client_secret: String,
    /// Serve HTTPS with a freshly made certificate (see [`TokenServer::ca_pem`]).
    pub tls: bool,
}

impl Default for TokenServerConfig {
    fn default() -> Self {
        TokenServerConfig {
            lifetime: Duration::from_secs(3600),
            client_id: "testkit-client".to_owned(),
            client_secret: "testkit-secret".to_owned(),
            tls: false,
        }
    }
}

/// One HTTP request as the server received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Request method as sent, e.g. `POST`.
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    /// Headers in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body as text (invalid UTF-8 replaced).
    pub body: String,
    /// Decoded form fields when the content type is `application/x-www-form-urlencoded`,
    /// otherwise empty.
    pub form: Vec<(String, String)>,
    /// When the request was fully read.
    pub at: SystemTime,
}

impl RecordedRequest {
    /// First value of a header, looked up case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// First value of a query parameter.
    pub fn query_param(&self, key: &str) -> Option<&str> {
        first_value(&self.query, key)
    }

    /// First value of a form field.
    pub fn form_param(&self, key: &str) -> Option<&str> {
        first_value(&self.form, key)
    }

    /// The decoded `(client_id, client_secret)` of a `Basic` authorization header, or `None`
    /// when the header is missing or malformed.
    pub fn basic_credentials(&self) -> Option<(String, String)> {
        let value = self.header("authorization")?.trim();
        let (scheme, encoded) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = STANDARD.decode(encoded.trim()).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (id, secret) = text.split_once(':')?;
        Some((id.to_owned(), secret.to_owned()))
    }
}

fn first_value<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// A token the server handed out through normal issuing.
#[derive(Debug, Clone)]
pub struct IssuedTokenRecord {
    /// Which endpoint issued it.
    pub endpoint: Endpoint,
    /// The access token (a JWT made by [`jwt`]).
    pub access_token: String,
    /// The id token that came with it.
    pub id_token: String,
    /// The access token's `exp` claim, unix seconds.
    pub exp: u64,
    /// The organisation id it was issued for.
    pub org: String,
    /// When it was issued.
    pub at: SystemTime,
}

/// A scripted answer that replaces normal issuing for one request (queued with
/// [`TokenServer::push_response`]) or for every request (set with [`TokenServer::set_default`]).
/// Scripted answers apply to any path and method.
#[derive(Debug, Clone, PartialEq)]
pub enum Scripted {
    /// Any status with this body; `content_type` is omitted when empty, `headers` are added
    /// as given (e.g. `retry-after`). Content-length and connection headers are the server's
    /// own, so leave them out.
    Status {
        /// Status code, sent as is.
        code: u16,
        /// Response body.
        body: String,
        /// Value of the `content-type` header.
        content_type: String,
        /// Extra response headers.
        headers: Vec<(String, String)>,
    },
    /// 200 with this JSON body (wrong shapes, missing or empty tokens, chosen `exp`).
    Json(Value),
    /// 200 `application/json` with exactly this text (malformed JSON).
    RawBody(String),
    /// 200 with a body of exactly this many bytes and a matching content-length, streamed so
    /// the server never holds it in memory. It starts like a CSP token response
    /// (`{"access_token":"xxxx…"}`) when long enough, so a client without a size cap would
    /// happily parse it.
    Huge {
        /// Body length in bytes.
        bytes: usize,
    },
    /// Read the request and never answer; the connection stays open until shutdown.
    Hang,
    /// Send a 200 head without content-length, then one body byte (a space) per interval,
    /// until the client goes away or the server shuts down. Intervals below 1 ms count as
    /// 1 ms, so the server never spins.
    Trickle {
        /// Pause before each byte.
        interval: Duration,
    },
    /// Read the request, send the start of a response head, then abort the connection with a
    /// TCP reset (`SO_LINGER` 0).
    Reset,
    /// A redirect with this `location` and status code (e.g. 302, 307).
    Redirect {
        /// Target URL.
        location: String,
        /// Status code.
        code: u16,
    },
    /// Wait this long, then issue normally.
    Delay(Duration),
}

impl Scripted {
    /// A [`Scripted::Status`] with no extra headers.
    pub fn status(code: u16, content_type: &str, body: &str) -> Scripted {
        Scripted::Status { code, body: body.to_owned(), content_type: content_type.to_owned(), headers: Vec::new() }
    }
}

/// Builds an unsigned-looking JWT: `base64url(header).base64url(claims).base64url("sig")`.
/// Nothing verifies the signature; the operator only reads the claims (e.g. `exp`).
pub fn jwt(claims: &Value) -> String {
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": "testkit"});
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode("sig")
    )
}

/// A scripted CSP error: `status` with a `CspErrorResponse` JSON body
/// `{cspErrorCode, message, errorCode, requestId, moduleCode, statusCode}`.
///
/// The published reference names these fields but not their types; here `errorCode` repeats
/// the `cspErrorCode` string, `moduleCode` is the number 0 and `statusCode` is the status.
pub fn csp_error(status: u16, csp_error_code: &str, message: &str, request_id: &str) -> Scripted {
    let body = csp_error_body(status, csp_error_code, message, request_id);
    Scripted::status(status, "application/json", &body)
}

fn csp_error_body(status: u16, csp_error_code: &str, message: &str, request_id: &str) -> String {
    json!({
        "cspErrorCode": csp_error_code,
        "message": message,
        "errorCode": csp_error_code,
        "requestId": request_id,
        "moduleCode": 0,
        "statusCode": status,
    })
    .to_string()
}

/// Handle to a running token server. The server stops when this is dropped or
/// [`TokenServer::shutdown`] is called; open connections (including hung and trickling ones)
/// are closed then too.
pub struct TokenServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    tls: bool,
    ca_pem: Option<String>,
    stop: watch::Sender<bool>,
}

/// State shared between the handle and the connection tasks.
struct Shared {
    state: Mutex<State>,
}

struct State {
    lifetime: Duration,
    client_id: String,
    client_secret: String,
    queue: VecDeque<Scripted>,
    default: Option<Scripted>,
    requests: Vec<RecordedRequest>,
    issued: Vec<IssuedTokenRecord>,
    grants: grants::Grants,
}

impl Shared {
    /// Locks the state. A panic elsewhere while holding the lock leaves the data usable (every
    /// update is a single push or assignment), so poisoning is ignored rather than spread.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl TokenServer {
    /// Starts a server on `127.0.0.1` with an ephemeral port.
    ///
    /// # Panics
    /// When the port cannot be bound or the TLS material cannot be made: a test cannot go on
    /// without its server.
    pub async fn start(config: TokenServerConfig) -> TokenServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("token server: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("token server: read local address");
        let (acceptor, ca_pem) = if config.tls {
            let (acceptor, pem) = tls_material();
            (Some(acceptor), Some(pem))
        } else {
            (None, None)
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                lifetime: config.lifetime,
                client_id: config.client_id,
                client_secret: config.client_secret,
                queue: VecDeque::new(),
                default: None,
                requests: Vec::new(),
                issued: Vec::new(),
                grants: grants::Grants::default(),
            }),
        });
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(accept_loop(listener, acceptor, shared.clone(), stopped));
        TokenServer { shared, addr, tls: config.tls, ca_pem, stop }
    }

    /// `http://127.0.0.1:PORT`, or `https://…` in TLS mode (the certificate is valid for
    /// `127.0.0.1` and `localhost`).
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// `https://token-endpoint.test:PORT`: this server by a name only a
    /// [`ConnectProxy`](crate::connect_proxy::ConnectProxy) resolves (TLS mode only).
    pub fn proxied_base_url(&self) -> String {
        assert!(self.tls, "token server: proxied_base_url needs TLS mode");
        format!("https://{PROXIED_HOST}:{}", self.addr.port())
    }

    /// Full URL of one endpoint, without query string.
    pub fn url(&self, endpoint: Endpoint) -> String {
        format!("{}{}", self.base_url(), endpoint.path())
    }

    /// The socket address the server listens on (for raw TCP clients).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// PEM of the CA certificate that signed the server certificate, in TLS mode.
    pub fn ca_pem(&self) -> Option<String> {
        self.ca_pem.clone()
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Number of requests received so far.
    pub fn request_count(&self) -> usize {
        self.shared.lock().requests.len()
    }

    /// Every token handed out by normal issuing, in order.
    pub fn issued(&self) -> Vec<IssuedTokenRecord> {
        self.shared.lock().issued.clone()
    }

    /// Queues a scripted answer: queued answers go to the next requests, one each, in order,
    /// before [`TokenServer::set_default`] or normal issuing apply again.
    pub fn push_response(&self, r: Scripted) {
        self.shared.lock().queue.push_back(r);
    }

    /// Sets (or with `None` clears) an answer given to every request once the queue is empty.
    pub fn set_default(&self, r: Option<Scripted>) {
        self.shared.lock().default = r;
    }

    /// Changes the validity of tokens issued from now on.
    pub fn set_lifetime(&self, d: Duration) {
        self.shared.lock().lifetime = d;
    }

    /// Replaces the accepted credentials (a credential rotation): the old ones now get 401
    /// from Navigator and a 400 `invalid_client` error from CSP.
    pub fn set_credentials(&self, client_id: &str, client_secret: &str) {
        let mut state = self.shared.lock();
        state.client_id = client_id.to_owned();
        state.client_secret = client_secret.to_owned();
    }

    /// Stops accepting connections and closes the open ones. Idempotent; the listener closes
    /// promptly but asynchronously, right after this returns.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }
}

impl fmt::Debug for TokenServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenServer").field("base_url", &self.base_url()).finish_non_exhaustive()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Makes a throwaway CA and a leaf certificate for `localhost`, `127.0.0.1` and [`PROXIED_HOST`] signed by it,
/// and returns a TLS acceptor serving the leaf plus the CA's PEM. A separate CA (rather than a
/// self-signed leaf) is what real deployments look like and what every verifier accepts.
fn tls_material() -> (TlsAcceptor, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    let ca_key = KeyPair::generate().expect("token server: CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("token server: CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "testkit token server CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).expect("token server: CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate().expect("token server: leaf key");
    let mut leaf_params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned(), PROXIED_HOST.to_owned()]).expect("token server: leaf");
    leaf_params.distinguished_name.push(DnType::CommonName, "localhost");
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer).expect("token server: leaf certificate");

    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let chain = vec![leaf_cert.der().clone(), ca_cert.der().clone()];
    // An explicit ring provider: no process-wide default needs installing, and aws-lc-rs is
    // never involved.
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("token server: TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("token server: TLS certificate");
    // Only HTTP/1.1 is spoken; saying so keeps a client that offers h2 from choosing it.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (TlsAcceptor::from(Arc::new(config)), ca_cert.pem())
}

/// Accepts connections until shutdown, serving each on its own task.
async fn accept_loop(listener: TcpListener, acceptor: Option<TlsAcceptor>, shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) {
    loop {
        let tcp = tokio::select! {
            () = until_stopped(&mut stopped) => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(_) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        // Small responses must leave at once, not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let acceptor = acceptor.clone();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let serve = async {
                match acceptor {
                    None => serve_connection(tcp, &shared).await,
                    Some(acceptor) => {
                        if let Ok(tls) = acceptor.accept(tcp).await {
                            serve_connection(tls, &shared).await;
                        }
                    }
                }
            };
            // Dropping the connection future on shutdown is what ends hung, trickling and
            // idle keep-alive connections.
            tokio::select! {
                () = until_stopped(&mut stopped) => {}
                () = serve => {}
            }
        });
    }
}

/// Resolves once shutdown is signalled, or the handle (the sender) is gone, which is a
/// shutdown too. The borrowed value is dropped here, since it must not live across an await
/// in a spawned task.
async fn until_stopped(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

/// A byte stream the server can answer on, with access to the TCP socket underneath for
/// [`Scripted::Reset`].
trait Conn: AsyncRead + AsyncWrite + Unpin + Send {
    fn tcp(&self) -> &TcpStream;
}

impl Conn for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Conn for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// Whether a connection may carry another request after a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    KeepAlive,
    Close,
}

/// Serves requests on one connection until the client closes it, a response ends it, or the
/// input is unusable.
async fn serve_connection<C: Conn>(mut conn: C, shared: &Shared) {
    // Bytes read but not yet consumed: a request may arrive in pieces, or several at once.
    let mut buf = Vec::new();
    loop {
        let request = match read_request(&mut conn, &mut buf).await {
            Ok(Some(request)) => request,
            Ok(None) | Err(ReadError::Io) => return,
            Err(ReadError::Bad(status, message)) => {
                let response = Response::json(status, &json!({"error": message}));
                let _ = write_response(&mut conn, &response, After::Close).await;
                return;
            }
        };
        let after = if request.keep_alive { After::KeepAlive } else { After::Close };
        let recorded = request.recorded;
        let scripted = {
            let mut state = shared.lock();
            state.requests.push(recorded.clone());
            let queued = state.queue.pop_front();
            queued.or_else(|| state.default.clone())
        };
        let result = match scripted {
            None => {
                let response = issue(shared, &recorded);
                write_response(&mut conn, &response, after).await.map(|()| after)
            }
            Some(scripted) => play(&mut conn, shared, &recorded, scripted, after).await,
        };
        if result.unwrap_or(After::Close) == After::Close {
            return;
        }
    }
}

/// Carries out one scripted answer.
async fn play<C: Conn>(conn: &mut C, shared: &Shared, request: &RecordedRequest, scripted: Scripted, after: After) -> io::Result<After> {
    let response = match scripted {
        Scripted::Status { code, body, content_type, mut headers } => {
            if !content_type.is_empty() {
                headers.insert(0, ("content-type".to_owned(), content_type));
            }
            Response { status: code, headers, body: body.into_bytes() }
        }
        Scripted::Json(value) => Response::json(200, &value),
        Scripted::RawBody(text) => {
            Response { status: 200, headers: vec![("content-type".to_owned(), "application/json".to_owned())], body: text.into_bytes() }
        }
        Scripted::Redirect { location, code } => {
            Response { status: code, headers: vec![("location".to_owned(), location)], body: Vec::new() }
        }
        Scripted::Delay(pause) => {
            tokio::time::sleep(pause).await;
            issue(shared, request)
        }
        Scripted::Huge { bytes } => {
            write_huge(conn, bytes, after).await?;
            return Ok(after);
        }
        Scripted::Hang => std::future::pending().await,
        Scripted::Trickle { interval } => {
            trickle(conn, interval).await?;
            return Ok(After::Close);
        }
        Scripted::Reset => {
            reset(conn).await;
            return Ok(After::Close);
        }
    };
    write_response(conn, &response, after).await?;
    Ok(after)
}

/// Streams a `bytes`-long 200 body in fixed chunks.
async fn write_huge<C: Conn>(conn: &mut C, bytes: usize, after: After) -> io::Result<()> {
    const PREFIX: &[u8] = b"{\"access_token\":\"";
    const SUFFIX: &[u8] = b"\"}";
    let head = response_head(200, &[("content-type".to_owned(), "application/json".to_owned())], Some(bytes), after);
    conn.write_all(head.as_bytes()).await?;
    let (prefix, suffix) = if bytes >= PREFIX.len() + SUFFIX.len() { (PREFIX, SUFFIX) } else { (&b""[..], &b""[..]) };
    conn.write_all(prefix).await?;
    let filler = [b'x'; 16 * 1024];
    let mut left = bytes - prefix.len() - suffix.len();
    while left > 0 {
        let n = left.min(filler.len());
        conn.write_all(&filler[..n]).await?;
        left -= n;
    }
    conn.write_all(suffix).await?;
    conn.flush().await
}

/// Sends a 200 head whose body ends only when the connection closes, then one byte per
/// `interval`; returns when the client goes away.
async fn trickle<C: Conn>(conn: &mut C, interval: Duration) -> io::Result<()> {
    let interval = interval.max(Duration::from_millis(1));
    let head = response_head(200, &[("content-type".to_owned(), "application/json".to_owned())], None, After::Close);
    conn.write_all(head.as_bytes()).await?;
    conn.flush().await?;
    loop {
        tokio::time::sleep(interval).await;
        conn.write_all(b" ").await?;
        conn.flush().await?;
    }
}

/// Sends part of a response head, then aborts the connection with a TCP reset.
async fn reset<C: Conn>(conn: &mut C) {
    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: applic").await;
    let _ = conn.flush().await;
    // Let the partial head reach the client first: closing with SO_LINGER 0 discards
    // anything still unsent.
    tokio::time::sleep(Duration::from_millis(20)).await;
    // With a zero linger, closing sends RST instead of FIN. If it cannot be set the close is
    // an ordinary one, which still cuts the response short.
    let _ = conn.tcp().set_zero_linger();
    // The caller drops the connection next, which closes the socket.
}

/// A complete response with a known body.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn json(status: u16, value: &Value) -> Response {
        Response { status, headers: vec![("content-type".to_owned(), "application/json".to_owned())], body: value.to_string().into_bytes() }
    }
}

/// Writes a response; the body length always goes in content-length so the connection can
/// carry the next request.
async fn write_response<C: AsyncWrite + Unpin>(conn: &mut C, response: &Response, after: After) -> io::Result<()> {
    // These statuses never carry a body (RFC 9110), and a client would misread one.
    let bodiless = response.status < 200 || response.status == 204 || response.status == 304;
    let length = (!bodiless).then_some(response.body.len());
    let mut bytes = response_head(response.status, &response.headers, length, after).into_bytes();
    if !bodiless {
        bytes.extend_from_slice(&response.body);
    }
    conn.write_all(&bytes).await?;
    conn.flush().await
}

/// Formats a status line and headers. Without `content_length` the body is delimited by the
/// connection closing, so `after` must then be [`After::Close`].
fn response_head(status: u16, headers: &[(String, String)], content_length: Option<usize>, after: After) -> String {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(length) = content_length {
        head.push_str(&format!("content-length: {length}\r\n"));
    }
    if after == After::Close {
        head.push_str("connection: close\r\n");
    }
    head.push_str("\r\n");
    head
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        // The reason phrase is informational only; clients ignore it.
        _ => "Unknown",
    }
}

/// Why no request could be read.
enum ReadError {
    /// The connection failed or closed mid-request: nothing useful can be sent back.
    Io,
    /// The input is not a request this server takes: answer with this status, then close.
    Bad(u16, &'static str),
}

impl From<io::Error> for ReadError {
    fn from(_: io::Error) -> Self {
        ReadError::Io
    }
}

/// A parsed request plus whether the client wants the connection kept open.
struct ParsedRequest {
    recorded: RecordedRequest,
    keep_alive: bool,
}

/// Reads one request (head and content-length body) from `conn`, keeping any bytes beyond it
/// in `buf` for the next call. `Ok(None)` is a clean close between requests.
async fn read_request<C: Conn>(conn: &mut C, buf: &mut Vec<u8>) -> Result<Option<ParsedRequest>, ReadError> {
    // RFC 9112 asks servers to skip blank lines before a request line.
    let head_end = loop {
        let blank = buf.iter().take_while(|b| matches!(b, b'\r' | b'\n')).count();
        buf.drain(..blank);
        if let Some(end) = find(buf, b"\r\n\r\n") {
            break end;
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(ReadError::Bad(431, "request head too large"));
        }
        if read_more(conn, buf).await? == 0 {
            return if buf.is_empty() { Ok(None) } else { Err(ReadError::Io) };
        }
    };

    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(ReadError::Bad(400, "malformed request line"));
    };
    if method.is_empty() || !target.starts_with('/') {
        return Err(ReadError::Bad(400, "malformed request line"));
    }
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err(ReadError::Bad(505, "only HTTP/1.0 and HTTP/1.1 are spoken")),
    };
    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(ReadError::Bad(400, "malformed header line"));
        };
        // Whitespace before the colon is forbidden (RFC 9112): it enables smuggling tricks.
        if name.is_empty() || name.ends_with([' ', '\t']) {
            return Err(ReadError::Bad(400, "malformed header name"));
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if header("transfer-encoding").is_some() {
        // Token clients send small bodies with a content-length; chunked uploads are not
        // worth a decoder here.
        return Err(ReadError::Bad(501, "request transfer-encoding not supported"));
    }
    let body_len = match header("content-length") {
        None => 0,
        Some(value) => value.parse::<usize>().map_err(|_| ReadError::Bad(400, "bad content-length"))?,
    };
    if body_len > MAX_BODY_BYTES {
        return Err(ReadError::Bad(413, "request body too large"));
    }
    let connection = header("connection").unwrap_or_default().to_ascii_lowercase();
    let keep_alive = if http10 { connection.contains("keep-alive") } else { !connection.contains("close") };
    let wants_continue = header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    let is_form = header("content-type").is_some_and(|v| {
        let media_type = v.split(';').next().unwrap_or_default().trim();
        media_type.eq_ignore_ascii_case(FORM_CONTENT_TYPE)
    });

    let body_start = head_end + 4;
    let body_end = body_start + body_len;
    if buf.len() < body_end && wants_continue {
        // A client that asked to wait (curl does for larger bodies) would otherwise stall.
        conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        conn.flush().await?;
    }
    while buf.len() < body_end {
        if read_more(conn, buf).await? == 0 {
            return Err(ReadError::Io);
        }
    }
    let body = String::from_utf8_lossy(&buf[body_start..body_end]).into_owned();
    buf.drain(..body_end);

    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, decode_pairs(query)),
        None => (target, Vec::new()),
    };
    let form = if is_form { decode_pairs(&body) } else { Vec::new() };
    Ok(Some(ParsedRequest {
        recorded: RecordedRequest { method: method.to_owned(), path: path.to_owned(), query, headers, body, form, at: SystemTime::now() },
        keep_alive,
    }))
}

async fn read_more<C: AsyncRead + Unpin>(conn: &mut C, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 8 * 1024];
    let n = conn.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn decode_pairs(text: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(text.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

/// Normal issuing: validates the request like the real endpoint would and mints a token.
fn issue(shared: &Shared, request: &RecordedRequest) -> Response {
    if let Some(response) = grants::answer(shared, request) {
        return response;
    }
    let endpoint = match request.path.as_str() {
        NAVIGATOR_PATH => Endpoint::Navigator,
        CSP_PATH => Endpoint::Csp,
        _ => {
            return Response::json(404, &json!({"error": "not_found", "message": "no such path"}));
        }
    };
    if request.method != "POST" {
        let mut response = Response::json(405, &json!({"error": "method_not_allowed", "message": "use POST"}));
        response.headers.push(("allow".to_owned(), "POST".to_owned()));
        return response;
    }
    let mut state = shared.lock();
    let credentials_ok = request.basic_credentials().is_some_and(|(id, secret)| id == state.client_id && secret == state.client_secret);
    match endpoint {
        Endpoint::Navigator => {
            if !credentials_ok {
                return navigator_error(401, "unauthorized", "invalid client credentials");
            }
            let Some(org) = request.query_param("orgId").filter(|o| !o.is_empty()) else {
                return navigator_error(400, "bad_request", "orgId query parameter is required");
            };
            let requested = request.query_param("accessTokenValiditySeconds");
            let token = state.mint(Endpoint::Navigator, org, requested);
            Response::json(
                200,
                &json!({
                    "accessToken": token.access_token,
                    "idToken": token.id_token,
                    "refreshToken": token.refresh_token,
                    "returnUrl": "",
                }),
            )
        }
        Endpoint::Csp => {
            if !credentials_ok {
                return csp_response(400, "invalid_client", "Invalid authorization header");
            }
            match request.form_param("grant_type") {
                Some("client_credentials") => {}
                Some("refresh_token") => return grants::refresh(&mut state, request),
                Some(_) => {
                    return csp_response(400, "unsupported_grant_type", "grant type not supported");
                }
                None => return csp_response(400, "invalid_request", "grant_type is required"),
            }
            let Some(org) = request.form_param("orgId").filter(|o| !o.is_empty()) else {
                return csp_response(400, "invalid_request", "orgId is required");
            };
            let requested = request.form_param("accessTokenValiditySeconds");
            let scope = request.form_param("scope").unwrap_or_default().to_owned();
            let token = state.mint(Endpoint::Csp, org, requested);
            Response::json(
                200,
                &json!({
                    "access_token": token.access_token,
                    "token_type": "bearer",
                    "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                    "id_token": token.id_token,
                    "expires_in": token.validity_secs,
                    "scope": scope,
                }),
            )
        }
    }
}

fn navigator_error(status: u16, error: &str, message: &str) -> Response {
    Response::json(status, &json!({"error": error, "message": message, "status": status}))
}

/// A CSP error response from normal issuing, with a fresh request id.
fn csp_response(status: u16, code: &str, message: &str) -> Response {
    let request_id = format!("testkit-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
    Response {
        status,
        headers: vec![("content-type".to_owned(), "application/json".to_owned())],
        body: csp_error_body(status, code, message, &request_id).into_bytes(),
    }
}

/// What normal issuing minted.
struct Minted {
    access_token: String,
    id_token: String,
    refresh_token: String,
    validity_secs: u64,
}

impl State {
    /// Mints and records a token for `org`. A requested validity only ever shortens the
    /// configured lifetime; zero, unparsable or longer values are ignored, as CSP documents.
    fn mint(&mut self, endpoint: Endpoint, org: &str, requested: Option<&str>) -> Minted {
        let lifetime = self.lifetime.as_secs();
        let validity_secs = requested.and_then(|v| v.trim().parse::<u64>().ok()).filter(|v| *v > 0).map_or(lifetime, |v| v.min(lifetime));
        let now = SystemTime::now();
        let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let exp = iat + validity_secs;
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let access_token = jwt(&json!({
            "sub": self.client_id,
            "azp": self.client_id,
            "iss": "testkit",
            "context_name": org,
            "iat": iat,
            "exp": exp,
            "jti": id.to_string(),
        }));
        let id_token = jwt(&json!({
            "sub": self.client_id,
            "aud": self.client_id,
            "iss": "testkit",
            "iat": iat,
            "exp": exp,
            "jti": format!("id-{id}"),
        }));
        self.issued.push(IssuedTokenRecord {
            endpoint,
            access_token: access_token.clone(),
            id_token: id_token.clone(),
            exp,
            org: org.to_owned(),
            at: now,
        });
        Minted { access_token, id_token, refresh_token: format!("testkit-refresh-{id}"), validity_secs }
    }
}
