//! `socks_request`: the client side of SOCKS5 as netproxy reads it ([`proxy_socks::read_request`]:
//! the greeting and method negotiation, RFC 1929 username and password when a credential is
//! configured, the request) over an in-memory stream that gives a few bytes per read, then
//! [`proxy_socks::target`]. A reading of RFC 1928 and RFC 1929 written here says what each
//! input is; netproxy must agree:
//! - it accepts exactly the well-formed requests (the RSV byte and the version byte of the
//!   username/password exchange are not looked at, as fast-socks5 does not);
//! - with a credential, only a method list that offers username/password and exactly that
//!   user and password pass; without one, only a list that offers no authentication;
//! - the method it answers is the one it then speaks;
//! - the command, the address and the port it returns are those sent, byte for byte;
//! - a domain target is [`Host::parse`]'s canonical host or refused, and the target
//!   round-trips: sent again (as a domain, and as an address when it is one), it reads as the
//!   same target.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use fast_socks5::Socks5Command;
use fast_socks5::util::target_addr::TargetAddr;
use proxy_core::{Host, ProxyCredential, Target};

use crate::input::Input;
use crate::mem::{Mem, ready};

/// Domains and pieces of domains the requests name.
pub(crate) const NAMES: &[&str] = &[
    "example.com",
    "Example.COM.",
    "127.0.0.1",
    "0x7f.1",
    "::1",
    "[::1]",
    "fe80::1%eth0",
    "bücher.example",
    "a..b",
    "",
    "a b",
    "localhost",
    "xn--bcher-kva.example",
];

/// What the reference reading says a client sent.
#[derive(Debug, PartialEq)]
enum Sent {
    /// A well-formed exchange: the command byte and the address.
    Request(u8, TargetAddr),
    /// Something netproxy must refuse.
    Refused,
}

/// Runs the target on one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let cred = input.bool().then(|| {
        let user = input.string(8);
        let password = input.string(8);
        ProxyCredential::new(user, password)
    });
    let chunk = 1 + input.below(16);
    let bytes = if input.bool() {
        input.rest().to_vec()
    } else {
        client_bytes(&mut input, cred.as_ref())
    };
    let mut stream = Mem::new(&bytes, chunk);
    let read = ready(proxy_socks::read_request(&mut stream, cred.as_ref()))
        .map(|(_reply, command, addr)| (command, addr));
    let sent = reference(&bytes, cred.as_ref());
    match (&read, &sent) {
        (Ok((command, addr)), Sent::Request(cmd, want)) => {
            assert_eq!(*command, command_of(*cmd), "{bytes:?}");
            assert_eq!(addr, want, "{bytes:?}: another address than sent");
            target(addr);
        }
        (Err(_), Sent::Refused) => {}
        (read, sent) => {
            panic!("{bytes:?} ({cred:?}): netproxy read {read:?}, the RFC says {sent:?}")
        }
    }
    // The method answered is the one spoken: with a credential, username/password (then its
    // status), without, no authentication, or 0xff.
    if let [5, method, ..] = stream.written[..] {
        match (&cred, method) {
            (Some(_), 2 | 0xff) | (None, 0 | 0xff) => {}
            _ => panic!("{bytes:?}: method {method} answered ({cred:?})"),
        }
    }
}

/// Client bytes built from parts: the greeting, the credentials (right, or changed), the
/// request, and maybe bytes after it.
pub(crate) fn client_bytes(input: &mut Input<'_>, cred: Option<&ProxyCredential>) -> Vec<u8> {
    let mut out = vec![5];
    let methods: Vec<u8> = match input.below(4) {
        0 => vec![0],
        1 => vec![2],
        2 => vec![0, 2],
        _ => input.bytes(4).to_vec(),
    };
    out.push(methods.len() as u8);
    out.extend_from_slice(&methods);
    if methods.contains(&2) && (cred.is_some() || input.bool()) {
        let (mut user, mut password) = cred.map_or_else(
            || (b"user".to_vec(), b"secret".to_vec()),
            |c| {
                (
                    c.user().as_bytes().to_vec(),
                    c.password().as_bytes().to_vec(),
                )
            },
        );
        match input.below(5) {
            0 if !user.is_empty() => user.truncate(user.len() - 1),
            1 => password.push(input.byte()),
            2 => user = input.bytes(8).to_vec(),
            _ => {}
        }
        out.push(1);
        out.push(user.len() as u8);
        out.extend_from_slice(&user);
        out.push(password.len() as u8);
        out.extend_from_slice(&password);
    }
    out.extend_from_slice(&[
        5,
        input.pick(&[1, 1, 1, 2, 3, 0, 9]),
        input.pick(&[0, 0, 1]),
    ]);
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
    out.extend_from_slice(input.rest());
    out
}

/// Reads `bytes` as RFC 1928 and RFC 1929 say, as netproxy should with `cred`.
fn reference(bytes: &[u8], cred: Option<&ProxyCredential>) -> Sent {
    let mut r = Reader(bytes);
    reference_read(&mut r, cred).unwrap_or(Sent::Refused)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (now, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(now)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
}

fn reference_read(r: &mut Reader<'_>, cred: Option<&ProxyCredential>) -> Option<Sent> {
    if r.byte()? != 5 {
        return None;
    }
    let n = r.byte()?;
    let methods = r.take(usize::from(n))?;
    let wanted = if cred.is_some() { 2 } else { 0 };
    if !methods.contains(&wanted) {
        return None;
    }
    if let Some(cred) = cred {
        let _version = r.byte()?;
        let ulen = r.byte()?;
        let user = r.take(usize::from(ulen))?;
        let plen = r.byte()?;
        let password = r.take(usize::from(plen))?;
        if ulen == 0 || plen == 0 {
            return None;
        }
        if user != cred.user().as_bytes() || password != cred.password().as_bytes() {
            return None;
        }
    }
    let [version, cmd, _rsv, atyp] = <[u8; 4]>::try_from(r.take(4)?).ok()?;
    if version != 5 {
        return None;
    }
    let ip = match atyp {
        1 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(r.take(4)?).ok()?)),
        4 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(r.take(16)?).ok()?)),
        3 => {
            let len = r.byte()?;
            let name = std::str::from_utf8(r.take(usize::from(len))?)
                .ok()?
                .to_owned();
            let port = u16::from_be_bytes(<[u8; 2]>::try_from(r.take(2)?).ok()?);
            return matches!(cmd, 1..=3)
                .then_some(Sent::Request(cmd, TargetAddr::Domain(name, port)));
        }
        _ => return None,
    };
    let port = u16::from_be_bytes(<[u8; 2]>::try_from(r.take(2)?).ok()?);
    matches!(cmd, 1..=3).then_some(Sent::Request(
        cmd,
        TargetAddr::Ip(SocketAddr::new(ip, port)),
    ))
}

fn command_of(cmd: u8) -> Socks5Command {
    match cmd {
        1 => Socks5Command::TCPConnect,
        2 => Socks5Command::TCPBind,
        _ => Socks5Command::UDPAssociate,
    }
}

/// The target of `addr`: canonical, or refused exactly when the name is not a host; and it
/// reads the same when sent again.
pub(crate) fn target(addr: &TargetAddr) {
    let got = proxy_socks::target(addr);
    let target = match addr {
        TargetAddr::Ip(sa) => {
            let t = got.unwrap_or_else(|e| panic!("{addr:?}: an address refused: {e}"));
            assert_eq!(t, Target::net(Host::from_ip(sa.ip()), sa.port()));
            t
        }
        TargetAddr::Domain(name, port) => match (Host::parse(name), got) {
            (Ok(host), Ok(t)) => {
                assert_eq!(t, Target::net(host, *port), "{name:?}");
                t
            }
            (Err(_), Err(_)) => return,
            (h, t) => panic!("{name:?}: Host::parse says {h:?}, the SOCKS target {t:?}"),
        },
    };
    let (Some(host), port) = (target.host(), target.port()) else {
        panic!("{addr:?} became a unix target");
    };
    let shown = host.to_string();
    let mut again = vec![TargetAddr::Domain(shown.clone(), port)];
    if let (Some(ip), None) = (host.ip(), host.zone()) {
        again.push(TargetAddr::Ip(SocketAddr::new(ip, port)));
    }
    for addr2 in again {
        if matches!(&addr2, TargetAddr::Domain(n, _) if n.len() > 255) {
            continue;
        }
        // No authentication, then CONNECT to it.
        let mut bytes = vec![5, 1, 0, 5, 1, 0];
        bytes.extend(
            addr2
                .to_be_bytes()
                .unwrap_or_else(|e| panic!("{addr2:?}: {e}")),
        );
        let mut stream = Mem::new(&bytes, 64);
        let (_, _, read) = ready(proxy_socks::read_request(&mut stream, None))
            .unwrap_or_else(|e| panic!("{addr2:?} (from {addr:?}) is not read back: {e}"));
        assert_eq!(read, addr2);
        let back = proxy_socks::target(&read)
            .unwrap_or_else(|e| panic!("{addr2:?} (from {addr:?}) is refused: {e}"));
        assert_eq!(back, target, "{addr:?} → {addr2:?} does not round-trip");
    }
}
