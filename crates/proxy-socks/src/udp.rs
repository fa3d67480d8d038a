//! The UDP ASSOCIATE relay.
//!
//! The relay socket is bound on the address the client reached the TCP listener on. The
//! association belongs to its client: only datagrams from the TCP client's IP are relayed, and
//! when the client declared the address and port it sends from (DST.ADDR and DST.PORT of UDP
//! ASSOCIATE), only datagrams from that address and port (an unspecified address or port 0
//! leaves that part open). Within that, the first sender is the client for the rest of the
//! association. Datagrams from anyone else are dropped and counted
//! ([`proxy_io::Stats::foreign_datagrams`]), and never take the association over.
//!
//! Each datagram's destination is put to the gate once per association (protocol
//! `socks5_udp`); a name is resolved once and its addresses checked like any other. The
//! verdicts are kept for the [`VERDICTS`] destinations used last; one that fell out is judged
//! again when it comes back. A refused destination's datagrams are dropped and counted, and the
//! association stays up. Datagrams with FRAG ≠ 0 are dropped. Replies come back only from the
//! checked address of a destination the association still remembers. When a destination falls
//! out, and for every destination when the association ends (with its TCP control connection,
//! or after the idle timeout), one event ([`ASSOCIATION_EVENT`] on target `netproxy::audit`)
//! gives its datagram counts: sent, dropped (refused) and received.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::lru::Lru;

use fast_socks5::server::SocksServerError;
use fast_socks5::util::target_addr::TargetAddr;
use proxy_core::{Admission, Gate, Host, Lease, Protocol, RequestMeta, Via};
use tokio::net::UdpSocket;

/// The name of the event that sums up one destination of an association when it ends.
pub const ASSOCIATION_EVENT: &str = "netproxy.udp_association";

/// The largest datagram relayed.
const MAX_DATAGRAM: usize = 65_536;

/// How many destinations an association keeps its verdicts for.
pub const VERDICTS: usize = 1024;

/// What the association knows about one destination.
#[derive(Debug, Default)]
struct Destination {
    /// The checked address datagrams go to; `None` when the gate refused it.
    to: Option<SocketAddr>,
    /// Revoked when a narrower policy no longer allows the destination: then its datagrams
    /// and replies are dropped.
    lease: Lease,
    sent: u64,
    dropped: u64,
    received: u64,
}

/// Who owns an association: the TCP client's IP, narrowed by what the client declared in UDP
/// ASSOCIATE, and then the first sender that fits.
#[derive(Debug, Clone, Copy)]
struct Owner {
    /// The IP datagrams must come from; `None` when the client declared another address than
    /// its own (then nothing is relayed).
    ip: Option<IpAddr>,
    /// The declared source port, when one was given.
    port: Option<u16>,
    /// The sender that took the association.
    sender: Option<SocketAddr>,
}

impl Owner {
    /// The owner of an association whose TCP client is `peer` and which declared `declared`
    /// (an unspecified address or port 0 leaves that part open; a name is never resolved, so
    /// only its port counts).
    fn new(peer: SocketAddr, declared: &TargetAddr) -> Self {
        let peer_ip = peer.ip().to_canonical();
        let (declared_ip, port) = match declared {
            TargetAddr::Ip(sa) => (
                Some(sa.ip().to_canonical()).filter(|ip| !ip.is_unspecified()),
                sa.port(),
            ),
            TargetAddr::Domain(_, port) => (None, *port),
        };
        let ip = match declared_ip {
            Some(ip) if ip != peer_ip => {
                tracing::debug!(client = %peer, declared = %ip,
                    "the UDP client declared another address than its own: nothing is relayed");
                None
            }
            _ => Some(peer_ip),
        };
        Self {
            ip,
            port: (port != 0).then_some(port),
            sender: None,
        }
    }

    /// Whether a datagram from `src` belongs to the association; the first one that fits
    /// takes it for good.
    fn admits(&mut self, src: SocketAddr) -> bool {
        let src = canonical(src);
        if let Some(sender) = self.sender {
            return src == sender;
        }
        if Some(src.ip()) != self.ip || self.port.is_some_and(|p| p != src.port()) {
            return false;
        }
        self.sender = Some(src);
        true
    }
}

/// The relay's state, kept until the association ends.
struct Relay<'a, G> {
    gate: &'a G,
    peer: SocketAddr,
    owner: Owner,
    /// The verdicts of the destinations used last, with their counts.
    destinations: Lru<TargetAddr, Destination>,
    /// The checked addresses replies may come from (canonical), each with the remembered
    /// destination that last sent to it (replies are counted for that one when two names share
    /// an address).
    replies: HashMap<SocketAddr, TargetAddr>,
}

impl<G: Gate> Relay<'_, G> {
    /// The checked address for a destination, asking the gate when the association does not
    /// remember it.
    async fn route(&mut self, target: &TargetAddr) -> Option<SocketAddr> {
        if let Some(d) = self.destinations.get_mut(target) {
            if d.lease.is_revoked() {
                // The gate recorded the revocation; from now on the verdict is a refusal.
                d.to = None;
                d.lease = Lease::none();
            }
            return d.to;
        }
        let (to, lease) = self.judge(target).await;
        let evicted = self.destinations.insert(
            target.clone(),
            Destination {
                to,
                lease,
                ..Destination::default()
            },
        );
        if let Some((gone, d)) = evicted {
            self.forget(&gone, &d);
        }
        if let Some(t) = to {
            self.replies
                .entry(canonical(t))
                .or_insert_with(|| target.clone());
        }
        to
    }

    /// A destination fell out: its counts are reported, and replies from its address are kept
    /// only for another remembered destination with that address.
    fn forget(&mut self, gone: &TargetAddr, d: &Destination) {
        summarize(
            self.peer,
            gone,
            d,
            "UDP destination forgotten by its association",
        );
        let Some(to) = d.to.map(canonical) else {
            return;
        };
        if self.replies.get(&to) != Some(gone) {
            return;
        }
        let other = self
            .destinations
            .iter()
            .find(|(_, o)| o.to.map(canonical) == Some(to))
            .map(|(t, _)| t.clone());
        match other {
            Some(t) => {
                self.replies.insert(to, t);
            }
            None => {
                self.replies.remove(&to);
            }
        }
    }

    /// The gate's verdict for a destination: the checked address to send to, and the lease
    /// that a narrower policy revokes.
    async fn judge(&self, target: &TargetAddr) -> (Option<SocketAddr>, Lease) {
        let Ok(target) = crate::target(target) else {
            return (None, Lease::none());
        };
        // A datagram to port 0 (no service) is dropped before the gate.
        if target.port() == 0 {
            return (None, Lease::none());
        }
        let meta = RequestMeta::new(Protocol::Socks5Udp, target).with_client(self.peer);
        match self.gate.admit(&meta).await {
            Admission::Allow(route) if !route.intercept => match &route.via {
                Via::Direct(addrs) => match addrs.first().copied() {
                    Some(to) => (Some(to), self.gate.hold(&meta, &route)),
                    None => (None, Lease::none()),
                },
                _ => (None, Lease::none()),
            },
            _ => (None, Lease::none()),
        }
    }

    /// Counts a datagram for a destination; a sent one also makes it the destination replies
    /// from its address are counted for.
    fn count(&mut self, target: &TargetAddr, sent_to: Option<SocketAddr>) {
        if let Some(d) = self.destinations.peek_mut(target) {
            if sent_to.is_some() {
                d.sent += 1;
            } else {
                d.dropped += 1;
            }
        }
        if let Some(to) = sent_to
            && let Some(t) = self.replies.get_mut(&canonical(to))
            && t != target
        {
            t.clone_from(target);
        }
    }
}

/// Runs one association on `inbound` (the client-facing socket from the listener's
/// [`crate::RelaySockets`]) until the relay is idle for `idle`, then returns `EOF`. The caller
/// ends it earlier, by dropping it, when the control connection ends.
pub(crate) async fn relay<G: Gate>(
    gate: &G,
    peer: SocketAddr,
    declared: &TargetAddr,
    stats: &proxy_io::Stats,
    inbound: std::net::UdpSocket,
    idle: Duration,
) -> Result<(), SocksServerError> {
    let io = |e: std::io::Error| SocksServerError::Io {
        source: e,
        context: "UDP relay",
    };
    inbound.set_nonblocking(true).map_err(io)?;
    let inbound = UdpSocket::from_std(inbound).map_err(io)?;
    let out4 = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .await
        .map_err(io)?;
    let out6 = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).await.ok();
    let mut relay = Relay {
        gate,
        peer,
        owner: Owner::new(peer, declared),
        destinations: Lru::new(VERDICTS),
        replies: HashMap::new(),
    };
    let mut reply = Vec::with_capacity(MAX_DATAGRAM + 22);
    // One timer for the association, re-armed only when it fires.
    let deadline = tokio::time::sleep(idle);
    tokio::pin!(deadline);
    let mut last = tokio::time::Instant::now();
    let mut from_client = vec![0u8; MAX_DATAGRAM];
    let mut from_dest = vec![0u8; MAX_DATAGRAM];
    let mut from_dest6 = vec![0u8; MAX_DATAGRAM];
    loop {
        let event = tokio::select! {
            r = inbound.recv_from(&mut from_client) => Event::Client(r),
            r = out4.recv_from(&mut from_dest) => Event::Dest(r, false),
            r = async {
                match &out6 {
                    Some(s) => s.recv_from(&mut from_dest6).await,
                    None => std::future::pending().await,
                }
            } => Event::Dest(r, true),
            () = &mut deadline => {
                if last.elapsed() >= idle {
                    break;
                }
                deadline.as_mut().reset(last + idle);
                continue;
            }
        };
        match &event {
            // The client's socket failed for good (not a datagram's own error): the
            // association ends rather than spin on it.
            Event::Client(Err(e)) if !transient(e) => {
                tracing::debug!(client = %peer, error = %e, "UDP relay socket failed");
                break;
            }
            // An error is no activity: it does not keep the association alive.
            Event::Client(Err(_)) | Event::Dest(Err(_), _) => continue,
            _ => {}
        }
        last = tokio::time::Instant::now();
        match event {
            Event::Client(Ok((n, src))) => {
                // Only the association's client.
                if !relay.owner.admits(src) {
                    stats.add_foreign_datagram();
                    tracing::debug!(client = %peer, from = %src,
                        "UDP datagram from another sender than the association's client dropped");
                    continue;
                }
                let Some((target, payload)) = read_datagram(&from_client[..n]).await else {
                    continue;
                };
                let payload = payload.to_vec();
                match relay.route(&target).await {
                    Some(to) => {
                        let sock = if to.is_ipv4() {
                            Some(&out4)
                        } else {
                            out6.as_ref()
                        };
                        if let Some(sock) = sock
                            && sock.send_to(&payload, to).await.is_ok()
                        {
                            relay.count(&target, Some(to));
                        }
                    }
                    None => relay.count(&target, None),
                }
            }
            Event::Dest(Ok((n, src)), v6) => {
                // Replies only from a destination this association sent to.
                let Some(client) = relay.owner.sender else {
                    continue;
                };
                let Some(target) = relay.replies.get(&canonical(src)) else {
                    continue;
                };
                // Nothing comes back from a destination the policy no longer allows.
                if relay
                    .destinations
                    .peek_mut(target)
                    .is_none_or(|d| d.to.is_none() || d.lease.is_revoked())
                {
                    continue;
                }
                let buf = if v6 { &from_dest6 } else { &from_dest };
                write_datagram_header(&mut reply, src);
                reply.extend_from_slice(&buf[..n]);
                if inbound.send_to(&reply, client).await.is_ok() {
                    let target = target.clone();
                    if let Some(d) = relay.destinations.peek_mut(&target) {
                        d.received += 1;
                    }
                }
            }
            Event::Client(Err(_)) | Event::Dest(Err(_), _) => {}
        }
    }
    Err(SocksServerError::EOF)
}

/// The association's end, however it comes (idle timeout, or the relay dropped when the TCP
/// control connection closes): one event per remembered destination with its
/// counts.
impl<G> Drop for Relay<'_, G> {
    fn drop(&mut self) {
        for (target, d) in self.destinations.iter() {
            summarize(self.peer, target, d, "UDP association ended");
        }
    }
}

/// The [`ASSOCIATION_EVENT`] for one destination of the association of `peer`.
fn summarize(peer: SocketAddr, target: &TargetAddr, d: &Destination, why: &'static str) {
    let (host, port) = match target {
        TargetAddr::Ip(sa) => (sa.ip().to_canonical().to_string(), sa.port()),
        TargetAddr::Domain(name, port) => (
            Host::parse(name).map_or_else(|_| "invalid_host".to_owned(), |h| h.to_string()),
            *port,
        ),
    };
    tracing::event!(
        target: "netproxy::audit",
        tracing::Level::INFO,
        "event.name" = ASSOCIATION_EVENT,
        network.transport.protocol = "socks5_udp",
        network.policy.decision = if d.to.is_some() { "allow" } else { "deny" },
        server.address = %host,
        server.port = port,
        client.address = %peer,
        udp.datagrams.sent = d.sent,
        udp.datagrams.dropped = d.dropped,
        udp.datagrams.received = d.received,
        "{why}"
    );
}

enum Event {
    Client(std::io::Result<(usize, SocketAddr)>),
    Dest(std::io::Result<(usize, SocketAddr)>, bool),
}

/// A client's datagram read (RFC 1928, section 7): its destination as the client named it and
/// its payload, or `None` when it is dropped: a header that is truncated, has a non-zero RSV or
/// an unknown address type, a domain that is not UTF-8, or FRAG ≠ 0 (netproxy does not
/// reassemble fragments). The destination is judged as [`crate::target`] reads it. It is
/// `async` because fast-socks5's parser is, but it never waits: polled once, it is ready.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use fast_socks5::util::target_addr::TargetAddr;
/// let mut datagram = vec![0, 0, 0, 3, 6];
/// datagram.extend_from_slice(b"a.test");
/// datagram.extend_from_slice(&53u16.to_be_bytes());
/// datagram.extend_from_slice(b"query");
/// let (to, payload) = proxy_socks::read_datagram(&datagram).await.unwrap();
/// assert_eq!((to, payload), (TargetAddr::Domain("a.test".into(), 53), &b"query"[..]));
/// datagram[2] = 1; // a fragment
/// assert!(proxy_socks::read_datagram(&datagram).await.is_none());
/// # }
/// ```
pub async fn read_datagram(datagram: &[u8]) -> Option<(TargetAddr, &[u8])> {
    match fast_socks5::parse_udp_request(datagram).await {
        Ok((0, target, payload)) => Some((target, payload)),
        Ok(_) | Err(_) => None,
    }
}

/// Writes into `out` (cleared first) the SOCKS5 UDP header of a reply from `from`: RSV, FRAG 0
/// and the address, IPv4 (ATYP 1) for an IPv4 or IPv4-mapped address, else IPv6 (ATYP 4). The
/// reply's payload goes after it.
///
/// ```
/// let mut out = Vec::new();
/// proxy_socks::write_datagram_header(&mut out, "[::ffff:10.0.0.1]:53".parse().unwrap());
/// assert_eq!(out, [0, 0, 0, 1, 10, 0, 0, 1, 0, 53]);
/// ```
pub fn write_datagram_header(out: &mut Vec<u8>, from: SocketAddr) {
    out.clear();
    out.extend_from_slice(&[0, 0, 0]);
    match from.ip().to_canonical() {
        IpAddr::V4(v4) => {
            out.push(1);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.push(4);
            out.extend_from_slice(&v6.octets());
        }
    }
    out.extend_from_slice(&from.port().to_be_bytes());
}

/// Whether a receive error concerns one datagram or a moment (an ICMP error reported on the
/// socket, an interrupted call), not the socket itself.
fn transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{
        ConnectionRefused, ConnectionReset, HostUnreachable, Interrupted, NetworkUnreachable,
        WouldBlock,
    };
    matches!(
        e.kind(),
        WouldBlock
            | Interrupted
            | ConnectionRefused
            | ConnectionReset
            | HostUnreachable
            | NetworkUnreachable
    )
}

/// An address with its IPv4-mapped form as IPv4, for comparing.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// The IP the client reached us on, for binding the relay and for the reply.
pub(crate) fn relay_ip(local: SocketAddr) -> IpAddr {
    local.ip()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reply_header_reads_back_as_its_address() {
        for from in [
            "10.0.0.1:53",
            "[::ffff:10.0.0.1]:53",
            "[2001:db8::1]:443",
            "0.0.0.0:0",
        ] {
            let from: SocketAddr = from.parse().unwrap();
            let mut datagram = Vec::new();
            write_datagram_header(&mut datagram, from);
            datagram.extend_from_slice(b"payload");
            let (to, payload) = read_datagram(&datagram).await.unwrap();
            assert_eq!(to, TargetAddr::Ip(canonical(from)), "{from}");
            assert_eq!(payload, b"payload");
        }
    }

    #[tokio::test]
    async fn fragments_and_malformed_headers_are_dropped() {
        let good = [0, 0, 0, 1, 127, 0, 0, 1, 0, 53, b'x'];
        assert!(read_datagram(&good).await.is_some());
        for bad in [
            &[0, 0, 1, 1, 127, 0, 0, 1, 0, 53, b'x'][..], // FRAG 1
            &[0, 1, 0, 1, 127, 0, 0, 1, 0, 53, b'x'],     // RSV
            &[0, 0, 0, 2, 127, 0, 0, 1, 0, 53, b'x'],     // ATYP 2
            &[0, 0, 0, 1, 127, 0, 0, 1, 0],               // truncated port
            &[0, 0, 0, 3, 4, b'a', 0xff, b'b', b'c', 0, 53], // domain not UTF-8
            &[],
        ] {
            assert!(read_datagram(bad).await.is_none(), "{bad:?}");
        }
    }
}
