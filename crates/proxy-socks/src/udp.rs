//! The UDP ASSOCIATE relay.
//!
//! The relay socket is bound on the address the client reached the TCP listener on; only
//! datagrams from the TCP client's IP (and the first source port seen) are relayed. Each
//! datagram's destination is put to the gate once per association (protocol `socks5_udp`); a
//! name is resolved once and its addresses checked like any other. A refused destination's
//! datagrams are dropped and counted, and the association stays up. Datagrams with FRAG ≠ 0 are
//! dropped. Replies come back only from a checked destination address. The association ends
//! with its TCP control connection, or after the idle timeout; then one event per destination
//! ([`ASSOCIATION_EVENT`] on target `netproxy::audit`) gives its datagram counts: sent,
//! dropped (refused) and received.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use fast_socks5::server::SocksServerError;
use fast_socks5::util::target_addr::TargetAddr;
use proxy_core::{Admission, Gate, Host, Protocol, RequestMeta, Target, Via};
use tokio::net::UdpSocket;

/// The name of the event that sums up one destination of an association when it ends.
pub const ASSOCIATION_EVENT: &str = "netproxy.udp_association";

/// The largest datagram relayed.
const MAX_DATAGRAM: usize = 65_536;

/// What the association knows about one destination.
#[derive(Debug, Default)]
struct Destination {
    /// The checked address datagrams go to; `None` when the gate refused it.
    to: Option<SocketAddr>,
    sent: u64,
    dropped: u64,
    received: u64,
}

/// The relay's state, kept until the association ends.
struct Relay<'a, G> {
    gate: &'a G,
    peer: SocketAddr,
    client: Option<SocketAddr>,
    destinations: HashMap<TargetAddr, Destination>,
    /// The checked addresses replies may come from, each with the destination that last sent
    /// to it (replies are counted for that one when two names share an address).
    allowed: Vec<(SocketAddr, TargetAddr)>,
}

impl<G: Gate> Relay<'_, G> {
    /// The checked address for a destination, asking the gate the first time.
    async fn route(&mut self, target: &TargetAddr) -> Option<SocketAddr> {
        if let Some(d) = self.destinations.get(target) {
            return d.to;
        }
        let to = self.judge(target).await;
        if let Some(t) = to
            && !self.allowed.iter().any(|(a, _)| *a == t)
        {
            self.allowed.push((t, target.clone()));
        }
        self.destinations.insert(
            target.clone(),
            Destination {
                to,
                ..Destination::default()
            },
        );
        to
    }

    async fn judge(&self, target: &TargetAddr) -> Option<SocketAddr> {
        let target = match target {
            TargetAddr::Ip(sa) => Target::net(Host::from_ip(sa.ip()), sa.port()),
            TargetAddr::Domain(name, port) => Target::net(Host::parse(name).ok()?, *port),
        };
        let meta = RequestMeta::new(Protocol::Socks5Udp, target).with_client(self.peer);
        match self.gate.admit(&meta).await {
            Admission::Allow(route) if !route.intercept => match route.via {
                Via::Direct(addrs) => addrs.first().copied(),
                _ => None,
            },
            _ => None,
        }
    }

    fn count(&mut self, target: &TargetAddr, sent: bool) {
        if let Some(d) = self.destinations.get_mut(target) {
            if sent {
                d.sent += 1;
            } else {
                d.dropped += 1;
            }
        }
    }
}

/// Runs one association on `inbound` (the client-facing socket fast-socks5 bound) until the
/// relay is idle for `idle`. Returns `EOF` so that fast-socks5 ends the association.
pub(crate) async fn relay<G: Gate>(
    gate: &G,
    peer: SocketAddr,
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
        client: None,
        destinations: HashMap::new(),
        allowed: Vec::new(),
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
        last = tokio::time::Instant::now();
        match event {
            Event::Client(Ok((n, src))) => {
                // Only the TCP client's IP, and the first source port it used.
                if src.ip().to_canonical() != peer.ip().to_canonical() {
                    continue;
                }
                match relay.client {
                    None => relay.client = Some(src),
                    Some(c) if c != src => continue,
                    Some(_) => {}
                }
                let Ok((frag, target, payload)) =
                    fast_socks5::parse_udp_request(&from_client[..n]).await
                else {
                    continue;
                };
                if frag != 0 {
                    continue;
                }
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
                            relay.count(&target, true);
                            if let Some(a) = relay.allowed.iter_mut().find(|(a, _)| *a == to)
                                && a.1 != target
                            {
                                a.1 = target;
                            }
                        }
                    }
                    None => relay.count(&target, false),
                }
            }
            Event::Dest(Ok((n, src)), v6) => {
                // Replies only from a destination this association sent to.
                let Some(client) = relay.client else { continue };
                let Some(i) = relay.allowed.iter().position(|(t, _)| same(*t, src)) else {
                    continue;
                };
                let buf = if v6 { &from_dest6 } else { &from_dest };
                write_header(&mut reply, src);
                reply.extend_from_slice(&buf[..n]);
                if inbound.send_to(&reply, client).await.is_ok()
                    && let Some(d) = relay.destinations.get_mut(&relay.allowed[i].1)
                {
                    d.received += 1;
                }
            }
            Event::Client(Err(_)) | Event::Dest(Err(_), _) => {}
        }
    }
    Err(SocksServerError::EOF)
}

/// The association's end, however it comes (idle timeout, or fast-socks5 dropping the relay
/// when the TCP control connection closes): one event per destination with its counts.
impl<G> Drop for Relay<'_, G> {
    fn drop(&mut self) {
        for (target, d) in &self.destinations {
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
                client.address = %self.peer,
                udp.datagrams.sent = d.sent,
                udp.datagrams.dropped = d.dropped,
                udp.datagrams.received = d.received,
                "UDP association ended"
            );
        }
    }
}

enum Event {
    Client(std::io::Result<(usize, SocketAddr)>),
    Dest(std::io::Result<(usize, SocketAddr)>, bool),
}

/// The SOCKS5 UDP header for a reply from `from` (RSV, FRAG 0, the address), into `out`.
fn write_header(out: &mut Vec<u8>, from: SocketAddr) {
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

fn same(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

/// The IP the client reached us on, for binding the relay and for the reply.
pub(crate) fn relay_ip(local: SocketAddr) -> IpAddr {
    local.ip()
}
