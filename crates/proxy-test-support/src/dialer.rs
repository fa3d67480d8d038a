//! A [`Dialer`] for tests: it records every address it dials and fails the test at once if it
//! is ever asked to dial anything but loopback.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use proxy_core::{Dialer, Failure, Route, UpstreamFailure, Via};
use proxy_io::Conn;
use tokio::net::TcpStream;

/// Records dials; panics on a non-loopback address (the network-safety guard of DEVELOPERS.md).
/// A unix socket route is connected through the descriptor the gate checked, like netproxy's
/// own dialer does.
#[derive(Debug, Clone, Default)]
pub struct RecordingDialer {
    dials: Arc<Mutex<Vec<SocketAddr>>>,
}

impl RecordingDialer {
    /// A dialer with no dials yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every address dialled, in order.
    pub fn dials(&self) -> Vec<SocketAddr> {
        self.dials
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Dialer for RecordingDialer {
    type Conn = Conn;

    async fn dial(&self, route: &Route) -> Result<Conn, Failure> {
        let addrs = match &route.via {
            Via::Direct(a) => a.clone(),
            Via::UpstreamProxy { proxy, .. } => proxy.clone(),
            #[cfg(target_os = "linux")]
            Via::Unix(socket) => return proxy_io::connect_unix(socket).await,
            #[cfg(not(target_os = "linux"))]
            Via::Unix(_) => {
                return Err(Failure::new(
                    UpstreamFailure::ConnectFailed,
                    "unix sockets are dialled through /proc/self/fd, which only Linux has",
                ));
            }
        };
        let mut last = None;
        for addr in addrs {
            assert!(
                addr.ip().is_loopback(),
                "network safety: a test tried to dial {addr}, which is not loopback"
            );
            self.dials
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(addr);
            match TcpStream::connect(addr).await {
                Ok(s) => return Ok(Conn::Tcp(s)),
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            Some(e) => Failure::new(UpstreamFailure::of_connect_error(&e), e.to_string()),
            None => Failure::new(UpstreamFailure::ConnectFailed, "no address to dial"),
        })
    }
}
