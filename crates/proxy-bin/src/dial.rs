//! The dialer: connects only to the addresses the gate checked, in order, or to the unix socket
//! the gate opened (through its descriptor), within `connect_timeout_ms` for the whole attempt.
//! It never resolves a name.

use std::time::Duration;

use proxy_core::{Dialer, Failure, Route, UpstreamFailure, Via};
use proxy_io::Conn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest response head accepted from an upstream proxy's answer to `CONNECT`.
const MAX_CONNECT_HEAD: usize = 16 * 1024;

/// Asks an upstream proxy for a tunnel to `authority`; succeeds on a 2xx answer.
async fn upstream_connect(stream: &mut TcpStream, authority: &str) -> Result<(), Failure> {
    let fail = |m: String| Failure::new(UpstreamFailure::ConnectFailed, m);
    let io_fail = |e: std::io::Error| {
        Failure::new(
            UpstreamFailure::of_connect_error(&e),
            format!("upstream proxy: {e}"),
        )
    };
    let request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(io_fail)?;
    // Read the head byte by byte so no tunnel byte is consumed.
    let mut head = Vec::with_capacity(256);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_CONNECT_HEAD {
            return Err(fail("upstream proxy: response head too long".into()));
        }
        let mut b = [0u8; 1];
        match stream.read(&mut b).await {
            Ok(1) => head.push(b[0]),
            Ok(_) => {
                return Err(fail(
                    "upstream proxy closed the connection during CONNECT".into(),
                ));
            }
            Err(e) => return Err(io_fail(e)),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let status = line.split_whitespace().nth(1).unwrap_or_default();
    if status.starts_with('2') && status.len() == 3 {
        Ok(())
    } else {
        let first = line.lines().next().unwrap_or_default().to_owned();
        Err(Failure::new(
            UpstreamFailure::ConnectRefused,
            format!("upstream proxy refused the tunnel: {first}"),
        ))
    }
}

/// Dials routes: TCP (direct, or through an upstream proxy's `CONNECT`) and unix sockets.
#[derive(Debug, Clone)]
pub struct TcpDialer {
    connect_timeout: Duration,
}

impl TcpDialer {
    /// A dialer that gives up after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        Self { connect_timeout }
    }
}

impl Dialer for TcpDialer {
    type Conn = Conn;

    async fn dial(&self, route: &Route) -> Result<Conn, Failure> {
        let (addrs, tunnel_to) = match &route.via {
            Via::Direct(addrs) => (addrs, None),
            Via::UpstreamProxy {
                proxy,
                authority,
                connect,
                ..
            } => (proxy, connect.then_some(authority.as_str())),
            Via::Unix(socket) => return self.dial_unix(socket).await,
        };
        let attempt = async {
            let mut errors = Vec::new();
            let mut kind = UpstreamFailure::ConnectFailed;
            for addr in addrs {
                match TcpStream::connect(addr).await {
                    Ok(mut s) => {
                        let _ = s.set_nodelay(true);
                        if let Some(authority) = tunnel_to {
                            upstream_connect(&mut s, authority).await?;
                        }
                        return Ok(Conn::Tcp(s));
                    }
                    Err(e) => {
                        // Refused when any address refused.
                        if UpstreamFailure::of_connect_error(&e) == UpstreamFailure::ConnectRefused
                        {
                            kind = UpstreamFailure::ConnectRefused;
                        }
                        errors.push(format!("{addr}: {e}"));
                    }
                }
            }
            Err(Failure::new(
                kind,
                if errors.is_empty() {
                    "no address to connect to".to_owned()
                } else {
                    errors.join("; ")
                },
            ))
        };
        match tokio::time::timeout(self.connect_timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(Failure::new(
                UpstreamFailure::ConnectFailed,
                format!(
                    "connect timed out after {} ms",
                    self.connect_timeout.as_millis()
                ),
            )),
        }
    }
}

impl TcpDialer {
    /// Connects the unix socket the gate checked, through its descriptor.
    #[cfg(target_os = "linux")]
    async fn dial_unix(&self, socket: &proxy_core::UnixSocket) -> Result<Conn, Failure> {
        match tokio::time::timeout(self.connect_timeout, proxy_io::connect_unix(socket)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::new(
                UpstreamFailure::ConnectFailed,
                format!(
                    "{}: connect timed out after {} ms",
                    socket.path().display(),
                    self.connect_timeout.as_millis()
                ),
            )),
        }
    }

    /// Unix sockets are reached through `/proc/self/fd`, which only Linux has.
    #[cfg(not(target_os = "linux"))]
    async fn dial_unix(&self, socket: &proxy_core::UnixSocket) -> Result<Conn, Failure> {
        Err(Failure::new(
            UpstreamFailure::ConnectFailed,
            format!(
                "{}: unix socket requests are supported on Linux only",
                socket.path().display()
            ),
        ))
    }
}
