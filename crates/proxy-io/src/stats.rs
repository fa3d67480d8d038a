//! Live counts of a front-end, read by the metrics at scrape time: connections and tunnels
//! open now, and bytes relayed through tunnels (added when a tunnel closes).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A front-end's live counts.
///
/// ```
/// use std::sync::Arc;
/// use proxy_io::Stats;
/// let stats = Arc::new(Stats::default());
/// let conn = stats.connection();
/// let tunnel = stats.tunnel();
/// assert_eq!((stats.connections(), stats.tunnels()), (1, 1));
/// tunnel.closed(10, 20);
/// drop(conn);
/// assert_eq!((stats.connections(), stats.tunnels()), (0, 0));
/// assert_eq!((stats.bytes_up(), stats.bytes_down()), (10, 20));
/// ```
#[derive(Debug, Default)]
pub struct Stats {
    connections: AtomicU64,
    tunnels: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    foreign_datagrams: AtomicU64,
}

impl Stats {
    /// Counts an open client connection until the guard drops.
    pub fn connection(self: &Arc<Self>) -> Open {
        self.connections.fetch_add(1, Ordering::Relaxed);
        Open {
            stats: self.clone(),
            tunnel: false,
        }
    }

    /// Counts an open tunnel until the guard drops (or [`Open::closed`] adds its bytes).
    pub fn tunnel(self: &Arc<Self>) -> Open {
        self.tunnels.fetch_add(1, Ordering::Relaxed);
        Open {
            stats: self.clone(),
            tunnel: true,
        }
    }

    /// Adds bytes relayed outside a tunnel (forwarded request and response bodies).
    pub fn add_bytes(&self, up: u64, down: u64) {
        if up > 0 {
            self.bytes_up.fetch_add(up, Ordering::Relaxed);
        }
        if down > 0 {
            self.bytes_down.fetch_add(down, Ordering::Relaxed);
        }
    }

    /// Counts a datagram dropped because it came from another sender than the client that
    /// owns the UDP association.
    pub fn add_foreign_datagram(&self) {
        self.foreign_datagrams.fetch_add(1, Ordering::Relaxed);
    }

    /// Datagrams dropped because they came from another sender than the association's client.
    pub fn foreign_datagrams(&self) -> u64 {
        self.foreign_datagrams.load(Ordering::Relaxed)
    }

    /// Client connections open now.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Tunnels open now.
    pub fn tunnels(&self) -> u64 {
        self.tunnels.load(Ordering::Relaxed)
    }

    /// Bytes relayed from clients to upstreams (closed tunnels and forwarded bodies).
    pub fn bytes_up(&self) -> u64 {
        self.bytes_up.load(Ordering::Relaxed)
    }

    /// Bytes relayed from upstreams to clients (closed tunnels and forwarded bodies).
    pub fn bytes_down(&self) -> u64 {
        self.bytes_down.load(Ordering::Relaxed)
    }
}

/// An open connection or tunnel; counted down when dropped.
#[derive(Debug)]
pub struct Open {
    stats: Arc<Stats>,
    tunnel: bool,
}

impl Open {
    /// Closes a tunnel, adding the bytes it relayed each way.
    pub fn closed(self, up: u64, down: u64) {
        self.stats.bytes_up.fetch_add(up, Ordering::Relaxed);
        self.stats.bytes_down.fetch_add(down, Ordering::Relaxed);
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let counter = if self.tunnel {
            &self.stats.tunnels
        } else {
            &self.stats.connections
        };
        counter.fetch_sub(1, Ordering::Relaxed);
    }
}
