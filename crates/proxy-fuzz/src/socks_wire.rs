//! `socks_wire`: the real SOCKS5 front-end ([`proxy_socks::serve_stream`]) serving one
//! connection whose client sends arbitrary bytes (a greeting, credentials and a request built
//! from pieces, then tunnel bytes; or raw bytes), in chunks with pauses, with or without the
//! proxy credential, UDP on or off, whatever the gate answers and whatever the upstream does
//! ([`crate::wire`]). Besides the harness's own checks (no panic in any task; the connection
//! ends in time):
//! - it ends within three times what its timeouts allow (the header timeout, twice the idle
//!   timeout and the ClientHello wait of `verify_sni`) plus the client's own pauses;
//! - it writes back a bounded amount: its few replies, plus what the upstream or the
//!   interceptor sent;
//! - what it writes is SOCKS5: the method selection first, a method the client can speak;
//! - a success reply to a `CONNECT` only after the gate admitted it and the dial succeeded;
//!   nothing dialled unless the gate admits it; nothing reaches the gate without the
//!   credential when one is required.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use proxy_core::ProxyCredential;
use proxy_io::{HELLO_WAIT, Limits};
use proxy_socks::{Accepted, RelaySocket, RelaySockets};

use crate::input::Input;
use crate::wire::{self, GREETING, Greeter, Origin, Pacing, Upstreams, Verdict};

/// The most the front-end writes of its own: the method selection, the authentication status,
/// one reply (IPv6 address: 22 bytes).
const OWN: u64 = 2 + 2 + 22;

/// Relay sockets that never come: UDP ASSOCIATE is answered `0x01`.
#[derive(Debug)]
struct NoRelays;

impl RelaySockets for NoRelays {
    fn bind(&self, _ip: IpAddr) -> RelaySocket<'_> {
        Box::pin(std::future::ready(Err(
            std::io::ErrorKind::AddrNotAvailable.into(),
        )))
    }
}

/// Relay sockets on loopback (a socket is bound, nothing is sent to it).
#[derive(Debug)]
struct LoopbackRelays;

impl RelaySockets for LoopbackRelays {
    fn bind(&self, _ip: IpAddr) -> RelaySocket<'_> {
        Box::pin(std::future::ready(std::net::UdpSocket::bind((
            Ipv4Addr::LOCALHOST,
            0,
        ))))
    }
}

/// Runs the target on one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let header_timeout = Duration::from_secs(input.pick(&[1, 2, 5]));
    let idle_timeout = Duration::from_secs(input.pick(&[1, 3, 10]));
    let cred = input.bool().then(|| {
        Arc::new(ProxyCredential::new(
            input.pick(&["netproxy", "u"]),
            input.pick(&["s3cret", "p"]),
        ))
    });
    // UDP off, on without relay sockets, or on with loopback ones.
    let udp = input.below(4);
    let limits = Limits {
        header_timeout,
        idle_timeout,
        max_connections: 1,
        udp: udp != 0,
        proxy_auth: cred.clone(),
        ..Limits::default()
    };
    let relays: Arc<dyn RelaySockets> = if udp == 3 {
        Arc::new(LoopbackRelays)
    } else {
        Arc::new(NoRelays)
    };
    let verdict = Verdict::read(&mut input);
    let origin = Origin::read(&mut input);
    let interceptor = Arc::new(Greeter {
        accepts: input.bool(),
    });
    let pacing = Pacing::read(&mut input);
    let bytes = if input.bool() {
        input.rest().to_vec()
    } else {
        crate::socks_request::client_bytes(&mut input, cred.as_deref())
    };
    let bound = pacing.time() + (header_timeout + idle_timeout * 2 + HELLO_WAIT) * 3;
    let gate = Arc::new(verdict.gate());
    let dialer = Arc::new(Upstreams::new(origin));
    let outcome = wire::drive(&bytes, &pacing, bound, udp == 3, |stream| {
        let client = Accepted {
            stream,
            peer: SocketAddr::from((Ipv4Addr::LOCALHOST, 40000)),
            local: SocketAddr::from((Ipv4Addr::LOCALHOST, 1080)),
        };
        proxy_socks::serve_stream(
            client,
            gate.clone(),
            dialer.clone(),
            interceptor,
            limits,
            relays,
        )
    });
    let dials = dialer.dials.load(Ordering::SeqCst);
    let upstream_wrote = dialer.written.load(Ordering::SeqCst);
    let most = OWN + upstream_wrote + GREETING.len() as u64;
    assert!(
        outcome.total <= most,
        "wrote {} bytes back (the upstream wrote {upstream_wrote})",
        outcome.total
    );
    if !verdict.admits() {
        assert_eq!(dials, 0, "dialled though the gate admits nothing");
    }
    let authenticated = cred.as_deref().is_none_or(|c| authenticates(&bytes, c));
    if !authenticated {
        assert!(
            gate.seen().is_empty(),
            "the gate was asked without the credential"
        );
        assert_eq!(dials, 0, "dialled without the credential");
    }
    let written = &outcome.written;
    let Some(&[version, method]) = written.first_chunk::<2>() else {
        return;
    };
    assert_eq!(version, 5, "not SOCKS5: {written:?}");
    let rest = match (method, &cred) {
        (0xff, _) => {
            assert_eq!(
                written.len(),
                2,
                "more after refusing every method: {written:?}"
            );
            return;
        }
        (0, None) => &written[2..],
        (2, Some(_)) => {
            let Some((&[1, status], rest)) = written[2..].split_first_chunk::<2>() else {
                return;
            };
            if status != 0 {
                assert!(
                    rest.is_empty(),
                    "more after refusing the credential: {written:?}"
                );
                return;
            }
            assert!(authenticated, "the credential was accepted from {bytes:?}");
            rest
        }
        _ => panic!("method {method} answered with the credential {cred:?}: {written:?}"),
    };
    // A success reply: a UDP association (its relay socket bound), or a CONNECT the gate
    // admitted and the dialer connected.
    if let Some(&[5, 0]) = rest.first_chunk::<2>() {
        let connect = gate
            .seen()
            .iter()
            .any(|m| m.protocol == proxy_core::Protocol::Socks5Tcp);
        assert!(
            connect || udp == 3,
            "a success reply, but no CONNECT reached the gate and no relay socket was had"
        );
        if connect {
            assert!(
                verdict.admits() && dials > 0,
                "a success reply for a CONNECT the gate ({verdict:?}) or the dial refused"
            );
        }
    }
}

/// Whether `bytes` hold the credential's username/password message (RFC 1929) somewhere.
fn authenticates(bytes: &[u8], cred: &ProxyCredential) -> bool {
    let (user, password) = (cred.user().as_bytes(), cred.password().as_bytes());
    let mut message = vec![user.len() as u8];
    message.extend_from_slice(user);
    message.push(password.len() as u8);
    message.extend_from_slice(password);
    bytes.windows(message.len()).any(|w| w == message)
}
