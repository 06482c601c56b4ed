//! A loopback HTTP proxy that speaks only `CONNECT`, as corporate egress proxies do for https.
//!
//! It routes [`PROXIED_HOST`](crate::token_server::PROXIED_HOST) (and loopback addresses) to
//! 127.0.0.1 and anything else nowhere, records what each client sent before the tunnel opened
//! (so tests can assert that no credential reached the proxy), and can be told to misbehave:
//! refuse with a status, demand proxy authorization, hang, or drop connections. Switching to a
//! failing mode also cuts the open tunnels, as a proxy outage does (clients pool them).

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::token_server::PROXIED_HOST;

/// Largest request head read from a client.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// How long a [`ProxyMode::Hang`] connection is held before it is dropped, so that tests end.
const HANG_FOR: Duration = Duration::from_secs(30);

/// How the proxy answers a `CONNECT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyMode {
    /// Opens the tunnel (`200 Connection established`).
    Tunnel,
    /// Answers with this status and closes, e.g. 403 (policy) or 502 (upstream unreachable).
    Refuse(u16),
    /// Reads the request and never answers (until [`HANG_FOR`] passes).
    Hang,
    /// Closes the connection without answering.
    Drop,
}

/// What a client sent the proxy before any tunnel: the request line and headers.
#[derive(Debug, Clone)]
pub struct ProxyRequest {
    /// `CONNECT`, or whatever else the client tried.
    pub method: String,
    /// The request target, `host:port` for a CONNECT.
    pub target: String,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Every byte received before the tunnel opened, as text.
    pub raw: String,
}

impl ProxyRequest {
    /// First value of a header, looked up case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

struct State {
    mode: ProxyMode,
    /// `user:password` the proxy demands in `Proxy-Authorization: Basic`, if any.
    credentials: Option<String>,
    requests: Vec<ProxyRequest>,
}

/// A running proxy on `127.0.0.1`; stops when dropped.
pub struct ConnectProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: watch::Sender<bool>,
    /// Bumped to cut every open tunnel.
    cut: watch::Sender<u64>,
}

impl ConnectProxy {
    /// Starts a tunnelling proxy on an ephemeral port.
    ///
    /// # Panics
    /// When the port cannot be bound: a test cannot go on without its proxy.
    pub async fn start() -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("connect proxy: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("connect proxy: local address");
        let state = Arc::new(Mutex::new(State { mode: ProxyMode::Tunnel, credentials: None, requests: Vec::new() }));
        let (stop, stopped) = watch::channel(false);
        let (cut, _) = watch::channel(0);
        tokio::spawn(accept_loop(listener, state.clone(), stopped, cut.clone()));
        ConnectProxy { addr, state, stop, cut }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes how later CONNECTs are answered; any mode but [`ProxyMode::Tunnel`] also cuts
    /// the tunnels open now.
    pub fn set_mode(&self, mode: ProxyMode) {
        let failing = mode != ProxyMode::Tunnel;
        self.lock().mode = mode;
        if failing {
            self.cut.send_modify(|generation| *generation += 1);
        }
    }

    /// Demands `Proxy-Authorization: Basic base64(user:password)`; others get 407.
    pub fn require_credentials(&self, user: &str, password: &str) {
        self.lock().credentials = Some(format!("{user}:{password}"));
    }

    /// Everything clients sent before their tunnels, in order.
    pub fn requests(&self) -> Vec<ProxyRequest> {
        self.lock().requests.clone()
    }

    /// Stops accepting; open tunnels end with their clients.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<Mutex<State>>, mut stopped: watch::Receiver<bool>, cut: watch::Sender<u64>) {
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                tokio::spawn(serve(client, state.clone(), cut.subscribe()));
            }
        }
    }
}

async fn serve(mut client: TcpStream, state: Arc<Mutex<State>>, mut cut: watch::Receiver<u64>) -> io::Result<()> {
    let Some(request) = read_head(&mut client).await? else { return Ok(()) };
    let (mode, credentials) = {
        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
        state.requests.push(request.clone());
        (state.mode.clone(), state.credentials.clone())
    };
    let answer = |status: &str| format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    match mode {
        ProxyMode::Drop => return Ok(()),
        ProxyMode::Hang => {
            tokio::time::sleep(HANG_FOR).await;
            return Ok(());
        }
        ProxyMode::Refuse(code) => return client.write_all(answer(&format!("{code} Refused")).as_bytes()).await,
        ProxyMode::Tunnel => {}
    }
    if request.method != "CONNECT" {
        // A forwarding request would show the proxy everything; this proxy only tunnels.
        return client.write_all(answer("405 Method Not Allowed").as_bytes()).await;
    }
    if let Some(expected) = credentials {
        let given =
            request.header("proxy-authorization").and_then(|v| v.strip_prefix("Basic ")).and_then(|b| STANDARD.decode(b.trim()).ok());
        if given.as_deref() != Some(expected.as_bytes()) {
            let head = "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"testkit\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            return client.write_all(head.as_bytes()).await;
        }
    }
    let Some(upstream_addr) = route(&request.target) else {
        return client.write_all(answer("502 Bad Gateway").as_bytes()).await;
    };
    let Ok(mut upstream) = TcpStream::connect(upstream_addr).await else {
        return client.write_all(answer("502 Bad Gateway").as_bytes()).await;
    };
    client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await?;
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => copied.map(|_| ()),
        _ = cut.changed() => Ok(()),
    }
}

/// Where a CONNECT target goes: [`PROXIED_HOST`] and loopback addresses to 127.0.0.1, with the
/// requested port; anything else nowhere (the proxy never reaches outside the machine).
fn route(target: &str) -> Option<SocketAddr> {
    let (host, port) = target.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    (host.eq_ignore_ascii_case(PROXIED_HOST) || loopback).then(|| SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Reads the request line and headers; `None` when the client went away first.
async fn read_head(client: &mut TcpStream) -> io::Result<Option<ProxyRequest>> {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte: anything after the head belongs to the tunnel and must not be consumed.
    while !raw.ends_with(b"\r\n\r\n") {
        if raw.len() >= MAX_HEAD_BYTES || client.read(&mut byte).await? == 0 {
            return Ok(None);
        }
        raw.push(byte[0]);
    }
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let mut lines = raw.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let target = request_line.next().unwrap_or_default().to_owned();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Ok(Some(ProxyRequest { method, target, headers, raw }))
}
