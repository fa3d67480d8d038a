//! The dialer: connects only to the addresses the gate checked, in order, within
//! `connect_timeout_ms` for the whole attempt. It never resolves a name.

use std::time::Duration;

use proxy_core::{Dialer, Failure, Route, UpstreamFailure, Via};
use tokio::net::TcpStream;

/// Dials TCP routes.
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
    type Conn = TcpStream;

    async fn dial(&self, route: &Route) -> Result<TcpStream, Failure> {
        let (addrs, tunnel_to) = match &route.via {
            Via::Direct(addrs) => (addrs, None),
            Via::UpstreamProxy {
                proxy,
                authority,
                connect,
                ..
            } => (proxy, connect.then_some(authority.as_str())),
            Via::Unix(socket) => {
                return Err(Failure::new(
                    UpstreamFailure::ConnectFailed,
                    format!(
                        "unix socket {} cannot be dialled as TCP",
                        socket.path().display()
                    ),
                ));
            }
        };
        let attempt = async {
            let mut errors = Vec::new();
            for addr in addrs {
                match TcpStream::connect(addr).await {
                    Ok(mut s) => {
                        let _ = s.set_nodelay(true);
                        if let Some(authority) = tunnel_to {
                            crate::upstream::connect_through(&mut s, authority).await?;
                        }
                        return Ok(s);
                    }
                    Err(e) => errors.push(format!("{addr}: {e}")),
                }
            }
            Err(Failure::new(
                UpstreamFailure::ConnectFailed,
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
