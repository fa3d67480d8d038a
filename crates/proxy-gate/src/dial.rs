//! The dialer: connects only to the addresses the gate checked, in order, or to the unix socket
//! the gate opened (through its descriptor), within `connect_timeout_ms` for the whole attempt.
//! It never resolves a name.

use std::time::Duration;

use proxy_core::{Dialer, Failure, Route, UpstreamFailure, Via};
use proxy_io::Conn;
use tokio::net::TcpStream;

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
                            crate::upstream::connect_through(&mut s, authority).await?;
                        }
                        return Ok(Conn::Tcp(s));
                    }
                    Err(e) => {
                        // Refused when any address refused.
                        if UpstreamFailure::of_connect_error(&e) == UpstreamFailure::ConnectRefused
                        {
                            kind = UpstreamFailure::ConnectRefused;
                        }
                        errors.push(format!("{addr} ({})", proxy_core::io_error_text(&e)));
                    }
                }
            }
            Err(Failure::new(
                kind,
                if errors.is_empty() {
                    "there was no address to connect to".to_owned()
                } else {
                    format!("could not connect to {}", errors.join(" or "))
                },
            ))
        };
        match tokio::time::timeout(self.connect_timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(Failure::new(
                UpstreamFailure::ConnectFailed,
                format!(
                    "could not connect to {} within {} ms",
                    shown(addrs),
                    self.connect_timeout.as_millis()
                ),
            )),
        }
    }
}

/// The addresses tried, for a message: `a`, `a or b`, or `a, b or c`.
fn shown(addrs: &[std::net::SocketAddr]) -> String {
    let all: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    match all.split_last() {
        None => "no address".to_owned(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
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
                    "could not connect to {} within {} ms",
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
