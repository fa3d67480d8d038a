//! `socks_udp`: the SOCKS5 UDP datagram header (RFC 1928, section 7) as the relay reads it
//! ([`proxy_socks::read_datagram`]) and writes it on replies
//! ([`proxy_socks::write_datagram_header`]). A reading written here says what each datagram is,
//! and netproxy must agree:
//! - a datagram is relayed only when its header is well-formed (RSV zero, a known address
//!   type, the whole address and port, a domain in UTF-8) and FRAG is 0; any other is dropped;
//! - the destination and the payload it relays are those sent, byte for byte;
//! - the destination's target is canonical or refused ([`crate::socks_request`]'s checks);
//! - a reply header round-trips: read back, it names the sender (IPv4-mapped as IPv4) and the
//!   payload after it is whole.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use fast_socks5::util::target_addr::TargetAddr;

use crate::input::Input;
use crate::mem::ready;
use crate::socks_request::NAMES;

/// Runs the target on one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let datagram = if input.bool() {
        input.rest().to_vec()
    } else {
        datagram(&mut input)
    };
    let ours = ready(proxy_socks::read_datagram(&datagram));
    let theirs = reference(&datagram);
    assert_eq!(
        ours, theirs,
        "{datagram:?}: netproxy reads {ours:?}, the RFC {theirs:?}"
    );
    if let Some((addr, _)) = &ours {
        crate::socks_request::target(addr);
    }
    // The reply header, for a sender the datagram names or from the input.
    let from = match ours {
        Some((TargetAddr::Ip(sa), _)) => sa,
        _ => SocketAddr::new(crate::policy::address(&mut input), input.u16()),
    };
    let payload = input.bytes(32);
    let mut reply = vec![0xee; 3];
    proxy_socks::write_datagram_header(&mut reply, from);
    let canonical = SocketAddr::new(from.ip().to_canonical(), from.port());
    let header = if canonical.is_ipv4() { 10 } else { 22 };
    assert_eq!(reply.len(), header, "{from}: a header of {reply:?}");
    reply.extend_from_slice(payload);
    let back = ready(proxy_socks::read_datagram(&reply));
    assert_eq!(
        back,
        Some((TargetAddr::Ip(canonical), payload)),
        "the reply header for {from} does not read back"
    );
}

/// A datagram built from parts: RSV, FRAG, an address, a port and a payload.
fn datagram(input: &mut Input<'_>) -> Vec<u8> {
    let mut out = if input.below(8) == 0 {
        vec![input.byte(), input.byte()]
    } else {
        vec![0, 0]
    };
    out.push(if input.below(4) == 0 { input.byte() } else { 0 });
    match input.below(4) {
        0 => {
            out.push(1);
            out.extend_from_slice(&[input.byte(), input.byte(), input.byte(), input.byte()]);
        }
        1 => {
            out.push(4);
            for _ in 0..16 {
                out.push(input.byte());
            }
        }
        2 => {
            let name = if input.bool() {
                input.pick(NAMES).as_bytes().to_vec()
            } else {
                input.bytes(40).to_vec()
            };
            out.push(3);
            out.push(name.len() as u8);
            out.extend_from_slice(&name);
        }
        _ => out.push(input.byte()),
    }
    out.extend_from_slice(&input.u16().to_be_bytes());
    out.extend_from_slice(input.bytes(64));
    out
}

/// The destination and payload of a well-formed, unfragmented datagram; `None` otherwise.
fn reference(d: &[u8]) -> Option<(TargetAddr, &[u8])> {
    let (&[0, 0, 0, atyp], rest) = d.split_first_chunk::<4>()? else {
        return None;
    };
    let (addr, rest): (Result<IpAddr, String>, &[u8]) = match atyp {
        1 => {
            let (a, rest) = rest.split_first_chunk::<4>()?;
            (Ok(IpAddr::V4(Ipv4Addr::from(*a))), rest)
        }
        4 => {
            let (a, rest) = rest.split_first_chunk::<16>()?;
            (Ok(IpAddr::V6(Ipv6Addr::from(*a))), rest)
        }
        3 => {
            let (len, rest) = rest.split_first()?;
            let (name, rest) = rest.split_at_checked(usize::from(*len))?;
            (Err(std::str::from_utf8(name).ok()?.to_owned()), rest)
        }
        _ => return None,
    };
    let (port, payload) = rest.split_first_chunk::<2>()?;
    let port = u16::from_be_bytes(*port);
    let addr = match addr {
        Ok(ip) => TargetAddr::Ip(SocketAddr::new(ip, port)),
        Err(name) => TargetAddr::Domain(name, port),
    };
    Some((addr, payload))
}
