//! The machine's own addresses, for the gate: every address configured on one of the host's
//! interfaces is local while local protection is on (a public IPv4 on a cloud NIC, a global
//! IPv6 from SLAAC reach the host's own services).
//!
//! [`dump`] asks the kernel once (an rtnetlink `RTM_GETADDR` dump). [`OwnAddrsWatch::start`]
//! subscribes to the kernel's address events first, then dumps, then applies each
//! `RTM_NEWADDR` / `RTM_DELADDR` as it arrives: no polling, and the task sleeps until the
//! kernel reports a change. When the kernel drops events (the socket's buffer overflowed), the
//! set is rebuilt from a fresh dump. The set is published through an [`ArcSwap`], so the gate
//! reads it without a lock.

use std::collections::HashSet;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{AsyncSocket, AsyncSocketExt, Socket, SocketAddr, TokioSocket};
use proxy_policy::OwnAddrs;

/// The legacy multicast group bits of rtnetlink for IPv4 and IPv6 address changes
/// (`RTMGRP_IPV4_IFADDR`, `RTMGRP_IPV6_IFADDR` in `<linux/rtnetlink.h>`).
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;

/// The live set of own addresses, shared with the gate.
pub type SharedOwnAddrs = Arc<ArcSwap<OwnAddrs>>;

/// One address on one interface (the same address may sit on two interfaces: removing it
/// from one leaves it own).
type Key = (u32, IpAddr);

/// The address an `RTM_NEWADDR` / `RTM_DELADDR` message names: `IFA_LOCAL` when present (on a
/// point-to-point link `IFA_ADDRESS` is the peer), else `IFA_ADDRESS`.
fn key_of(msg: &AddressMessage) -> Option<Key> {
    let mut address = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(ip) => return Some((msg.header.index, *ip)),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    address.map(|ip| (msg.header.index, ip))
}

/// What one netlink message means for the set.
enum Event {
    Add(Key),
    Remove(Key),
    Done,
    Error(io::Error),
    Other,
}

/// Splits a datagram into its netlink messages and reads each. A message this crate cannot
/// parse is skipped with a warning (it cannot be an address it knows how to read).
fn events(buf: &[u8]) -> Vec<Event> {
    let mut out = Vec::new();
    let mut offset = 0;
    while buf.len() >= offset + 16 {
        let len_bytes: [u8; 4] = buf[offset..offset + 4].try_into().unwrap_or([0; 4]);
        let len = u32::from_ne_bytes(len_bytes) as usize;
        if len < 16 || offset + len > buf.len() {
            break;
        }
        let one = &buf[offset..offset + len];
        offset += (len + 3) & !3;
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(one) {
            Ok(msg) => out.push(match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(m)) => {
                    key_of(&m).map_or(Event::Other, Event::Add)
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(m)) => {
                    key_of(&m).map_or(Event::Other, Event::Remove)
                }
                NetlinkPayload::Done(_) => Event::Done,
                NetlinkPayload::Error(e) if e.code.is_some() => Event::Error(e.to_io()),
                _ => Event::Other,
            }),
            Err(e) => tracing::warn!(error = %e, "own addresses: an unreadable netlink message"),
        }
    }
    out
}

fn publish(keys: &HashSet<Key>) -> OwnAddrs {
    keys.iter().map(|(_, ip)| *ip).collect()
}

/// The request for a dump of every address of every family.
fn dump_request() -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = 1;
    let mut packet = NetlinkMessage::new(
        header,
        NetlinkPayload::from(RouteNetlinkMessage::GetAddress(AddressMessage::default())),
    );
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    buf
}

fn dump_keys() -> io::Result<HashSet<Key>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    socket.send(&dump_request(), 0)?;
    let mut keys = HashSet::new();
    loop {
        let (buf, _) = socket.recv_from_full()?;
        if buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the kernel closed the address dump",
            ));
        }
        for event in events(&buf) {
            match event {
                Event::Add(k) => {
                    keys.insert(k);
                }
                Event::Remove(k) => {
                    keys.remove(&k);
                }
                Event::Done => return Ok(keys),
                Event::Error(e) => return Err(e),
                Event::Other => {}
            }
        }
    }
}

/// The machine's addresses now, from one rtnetlink dump (blocking, a few microseconds; for
/// `netproxy check` and for callers without a runtime).
pub fn dump() -> io::Result<OwnAddrs> {
    dump_keys().map(|keys| publish(&keys))
}

/// The own-address set kept current from the kernel's address events, for as long as this
/// value lives (dropping it stops the watching task; the set then stays as it was).
#[derive(Debug)]
pub struct OwnAddrsWatch {
    shared: SharedOwnAddrs,
    changed: Arc<tokio::sync::Notify>,
    task: tokio::task::AbortHandle,
}

impl OwnAddrsWatch {
    /// Subscribes to address events, dumps the addresses, and spawns the task that applies
    /// each change, on the current Tokio runtime. Fails when netlink is not available; the
    /// caller then refuses to start (fail closed).
    pub fn start() -> io::Result<Self> {
        let mut socket = TokioSocket::new(NETLINK_ROUTE)?;
        // Subscribed before the dump, so that no change between the two is lost: a change the
        // dump already shows is applied again, which is idempotent.
        socket
            .socket_mut()
            .bind(&SocketAddr::new(0, RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))?;
        let keys = dump_keys()?;
        let shared: SharedOwnAddrs = Arc::new(ArcSwap::from_pointee(publish(&keys)));
        let changed = Arc::new(tokio::sync::Notify::new());
        let task =
            tokio::spawn(watch(socket, keys, shared.clone(), changed.clone())).abort_handle();
        Ok(Self {
            shared,
            changed,
            task,
        })
    }

    /// The live set, for the gate.
    pub fn shared(&self) -> SharedOwnAddrs {
        self.shared.clone()
    }

    /// Notified (one stored permit) after each change of the set: open connections are then
    /// judged again.
    pub fn changed(&self) -> Arc<tokio::sync::Notify> {
        self.changed.clone()
    }
}

impl Drop for OwnAddrsWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn watch(
    socket: TokioSocket,
    mut keys: HashSet<Key>,
    shared: SharedOwnAddrs,
    notify: Arc<tokio::sync::Notify>,
) {
    loop {
        let buf = match socket.recv_from_full().await {
            Ok((buf, _)) => buf,
            // The kernel dropped events: rebuild the set from a fresh dump.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOBUFS.raw_os_error()) => {
                match tokio::task::spawn_blocking(dump_keys).await {
                    Ok(Ok(fresh)) => {
                        keys = fresh;
                        shared.store(Arc::new(publish(&keys)));
                        notify.notify_one();
                    }
                    Ok(Err(e)) => tracing::error!(error = %e, "own addresses: the dump failed"),
                    Err(e) => tracing::error!(error = %e, "own addresses: the dump failed"),
                }
                continue;
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "own addresses: the kernel's address events stopped; the set stays as it was"
                );
                return;
            }
        };
        let mut changed = false;
        for event in events(&buf) {
            changed |= match event {
                Event::Add(k) => keys.insert(k),
                Event::Remove(k) => keys.remove(&k),
                _ => false,
            };
        }
        if changed {
            let own = publish(&keys);
            tracing::debug!(addresses = own.len(), "own addresses changed");
            shared.store(Arc::new(own));
            notify.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dump_holds_loopback() {
        let own = dump().unwrap();
        assert!(own.contains("127.0.0.1".parse().unwrap()), "{own:?}");
        // Only the address itself, not its whole prefix.
        assert!(!own.contains("127.0.0.2".parse().unwrap()), "{own:?}");
    }
}
