//! The limits of `[network.limits]` both front-ends serve under.

use std::sync::Arc;
use std::time::Duration;

use proxy_core::ProxyCredential;

use crate::Stats;

/// A front-end's limits (from `[network.limits]`), the credential its clients must present,
/// and its live counts. Each front-end reads the fields that apply to it.
///
/// ```
/// let limits = proxy_io::Limits::default();
/// assert_eq!(limits.header_timeout.as_secs(), 10);
/// assert_eq!(limits.idle_timeout.as_secs(), 300);
/// assert_eq!((limits.max_header_bytes, limits.max_connections), (65536, 4096));
/// assert!(limits.udp && limits.proxy_auth.is_none());
/// ```
#[derive(Debug, Clone)]
pub struct Limits {
    /// From accept (or, over HTTP, the end of the previous response) until the request head
    /// (SOCKS: the greeting and the request) is read.
    pub header_timeout: Duration,
    /// HTTP: no response head within it of the request's last byte → 504; a response body
    /// that gets no byte for that long while the client waits is cut (the client's connection
    /// closed). A tunnel with no bytes either way for that long, or a write its peer does not
    /// take for that long, is closed.
    pub idle_timeout: Duration,
    /// HTTP: the largest request head (hyper's buffer cannot go below 8192 bytes).
    pub max_header_bytes: usize,
    /// Connections served at once; further ones wait in the accept backlog.
    pub max_connections: usize,
    /// SOCKS: whether UDP ASSOCIATE is served (`enable_socks5_udp`); otherwise it is answered
    /// 0x07.
    pub udp: bool,
    /// When set, every client must present this credential: over HTTP as
    /// `Proxy-Authorization: Basic` (others get `407`), over SOCKS as username and password
    /// (RFC 1929; no-auth is then not offered).
    pub proxy_auth: Option<Arc<ProxyCredential>>,
    /// Live counts (connections, tunnels, bytes) for the metrics.
    pub stats: Arc<Stats>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_header_bytes: 65536,
            max_connections: 4096,
            udp: true,
            proxy_auth: None,
            stats: Arc::default(),
        }
    }
}
