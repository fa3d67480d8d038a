//! `proxy-socks` is netproxy's SOCKS5 front-end: `CONNECT` (IPv4, IPv6 and domain address
//! types) and UDP ASSOCIATE, each request judged by the same [`Gate`] as HTTP with protocol
//! `socks5_tcp` (`socks5_udp` for each datagram's destination), dialled by the same [`Dialer`],
//! and tunnelled by `proxy-io`. Clients authenticate with no authentication, or, when the
//! listener has a credential ([`Limits::proxy_auth`]), with that username and password
//! (RFC 1929) and nothing else.
//!
//! It decides nothing itself and never resolves a name: a domain target goes to the gate as a
//! name (that is why clients should use `socks5h://`). Protocol framing is fast-socks5's
//! type-state server; its DNS and proxy helpers are never used, because they resolve with the
//! system resolver and dial without the policy. Replies follow docs/responses.md: `0x02` for a
//! refusal, `0x04` unreachable (including a name that does not resolve), `0x05` refused (the
//! failure's kind is [`UpstreamFailure::ConnectRefused`]), `0x07` for an unsupported command
//! (BIND, and UDP ASSOCIATE when [`Limits::udp`] is off), `0x08` for a bad address type, `0x01`
//! for a UDP ASSOCIATE that gets no relay socket from its [`RelaySockets`]. A
//! greeting or request that is malformed, truncated or slower than the header timeout gets its
//! reply or a closed connection.
//!
//! A `CONNECT` the gate routes with `intercept` (limited mode, port 443) is dialled, answered
//! with the success reply, and handed to the [`Interceptor`] with the client's socket; when the
//! interceptor declines it, it is refused `0x02`, never tunnelled as it is.
//!
//! The entry point is [`run`]: the caller binds the listener and decides what shutdown means.
//! The client-facing socket of a UDP association comes from the caller too
//! ([`run_with_relays`] and a [`RelaySockets`]; [`run`] binds it here with [`LocalRelays`]):
//! under `netproxy run --isolate` it must live in the child's network namespace
//! (docs/socks.md).
#![forbid(unsafe_code)]

mod lru;
mod udp;

pub use proxy_io::Limits;
pub use udp::{ASSOCIATION_EVENT, VERDICTS};

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use fast_socks5::server::Socks5ServerProtocol;
use fast_socks5::util::target_addr::TargetAddr;
use fast_socks5::{ReplyError, Socks5Command};
use proxy_core::{
    Admission, Dialer, Gate, Host, Intercepted, Interceptor, Protocol, RequestMeta, Target,
    UpstreamFailure,
};
use proxy_io::Stream;
use tokio::net::{TcpListener, TcpStream};

/// What [`RelaySockets::bind`] returns: a UDP socket, or why there is none.
pub type RelaySocket<'a> =
    Pin<Box<dyn Future<Output = std::io::Result<std::net::UdpSocket>> + Send + 'a>>;

/// Where a UDP association's client-facing relay socket comes from: the socket the client
/// sends its datagrams to, and that the replies come back from. The relay's own sockets
/// towards the destinations are always bound by netproxy, in its own namespace.
pub trait RelaySockets: std::fmt::Debug + Send + Sync + 'static {
    /// A UDP socket bound to `ip` (the address the client reached the SOCKS listener on) and
    /// an ephemeral port, asked once per UDP ASSOCIATE. An error refuses that association
    /// with REP `0x01`; so does a socket not ready within [`Limits::header_timeout`]. The
    /// future runs on the runtime's workers: a source that waits on another process should
    /// wait there only briefly.
    fn bind(&self, ip: IpAddr) -> RelaySocket<'_>;
}

/// Binds relay sockets in netproxy's own network namespace (what [`run`] uses).
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalRelays;

impl RelaySockets for LocalRelays {
    fn bind(&self, ip: IpAddr) -> RelaySocket<'_> {
        let socket = std::net::UdpSocket::bind((ip, 0));
        Box::pin(std::future::ready(socket))
    }
}

/// Serves SOCKS5 from `listener` until `shutdown` completes, then stops accepting and waits for
/// the open tunnels (the caller bounds that wait). Tunnels the gate routes with `intercept`
/// go to `interceptor` (see the crate's documentation). UDP relay sockets are bound by
/// [`LocalRelays`].
pub async fn run<G, D, I, S>(
    listener: TcpListener,
    gate: Arc<G>,
    dialer: Arc<D>,
    interceptor: Arc<I>,
    limits: Limits,
    shutdown: S,
) where
    G: Gate + 'static,
    D: Dialer<Conn: Stream> + 'static,
    I: Interceptor<TcpStream, D::Conn> + 'static,
    S: Future<Output = ()>,
{
    let relays = Arc::new(LocalRelays);
    run_with_relays(
        listener,
        gate,
        dialer,
        interceptor,
        limits,
        relays,
        shutdown,
    )
    .await;
}

/// Like [`run`], with each UDP association's client-facing socket from `relays`.
pub async fn run_with_relays<G, D, I, S>(
    listener: TcpListener,
    gate: Arc<G>,
    dialer: Arc<D>,
    interceptor: Arc<I>,
    limits: Limits,
    relays: Arc<dyn RelaySockets>,
    shutdown: S,
) where
    G: Gate + 'static,
    D: Dialer<Conn: Stream> + 'static,
    I: Interceptor<TcpStream, D::Conn> + 'static,
    S: Future<Output = ()>,
{
    let tracker = Arc::new(proxy_io::Tracker::default());
    let max_connections = limits.max_connections;
    let limits = Arc::new(limits);
    proxy_io::accept_loop(
        listener,
        max_connections,
        &tracker,
        shutdown,
        |stream, peer, permit| {
            let (gate, dialer, tracker) = (gate.clone(), dialer.clone(), tracker.clone());
            let (interceptor, limits, relays) =
                (interceptor.clone(), limits.clone(), relays.clone());
            async move {
                let parts = Parts {
                    gate: &*gate,
                    dialer: &*dialer,
                    interceptor: &interceptor,
                    limits: &limits,
                    tracker: &tracker,
                    relays: &*relays,
                };
                serve(parts, stream, peer, permit).await;
            }
        },
    )
    .await;
    tracker.idle().await;
}

/// The reply for an admission failure or a dial failure, by its kind.
fn failure_reply(kind: UpstreamFailure) -> ReplyError {
    match kind {
        UpstreamFailure::DnsFailed => ReplyError::HostUnreachable,
        UpstreamFailure::ConnectRefused => ReplyError::ConnectionRefused,
        UpstreamFailure::ConnectFailed | UpstreamFailure::UpstreamTimeout => {
            ReplyError::HostUnreachable
        }
        UpstreamFailure::UpstreamTlsFailed | UpstreamFailure::UpstreamError => {
            ReplyError::GeneralFailure
        }
    }
}

/// One UDP association: its client-facing socket from `relays` (REP `0x01` without one), the
/// success reply naming it, then the relay until it is idle for the idle timeout or the
/// control connection ends (EOF, an error, or a byte the client should not send).
async fn associate<G: Gate>(
    gate: &G,
    relays: &dyn RelaySockets,
    limits: &Limits,
    proto: Socks5ServerProtocol<TcpStream, fast_socks5::server::states::CommandRead>,
    peer: SocketAddr,
    local: SocketAddr,
    declared: &TargetAddr,
) {
    let ip = udp::relay_ip(local);
    let bound = match tokio::time::timeout(limits.header_timeout, relays.bind(ip)).await {
        Ok(Ok(socket)) => socket.local_addr().map(|a| (socket, a.port())),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    };
    let (socket, port) = match bound {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(client = %peer, %ip, error = %e,
                "no UDP relay socket: UDP ASSOCIATE refused");
            let _ = proto.reply_error(&ReplyError::GeneralFailure).await;
            return;
        }
    };
    let Ok(mut control) = proto.reply_success(SocketAddr::new(ip, port)).await else {
        return;
    };
    let relay = udp::relay(
        gate,
        peer,
        declared,
        &limits.stats,
        socket,
        limits.idle_timeout,
    );
    let ended = tokio::select! {
        e = relay => e,
        e = fast_socks5::server::wait_on_tcp(&mut control) => e,
    };
    match ended {
        Ok(()) | Err(fast_socks5::server::SocksServerError::EOF) => {
            tracing::debug!(client = %peer, "UDP association ended");
        }
        Err(e) => tracing::debug!(client = %peer, error = %e, "UDP association failed"),
    }
}

/// What serving one connection borrows from the listener.
struct Parts<'a, G, D, I> {
    gate: &'a G,
    dialer: &'a D,
    interceptor: &'a Arc<I>,
    limits: &'a Limits,
    tracker: &'a Arc<proxy_io::Tracker>,
    relays: &'a dyn RelaySockets,
}

async fn serve<G, D, I>(
    parts: Parts<'_, G, D, I>,
    stream: TcpStream,
    peer: SocketAddr,
    permit: tokio::sync::OwnedSemaphorePermit,
) where
    G: Gate,
    D: Dialer<Conn: Stream>,
    I: Interceptor<TcpStream, D::Conn> + 'static,
{
    let Parts {
        gate,
        dialer,
        interceptor,
        limits,
        tracker,
        relays,
    } = parts;
    let _ = stream.set_nodelay(true);
    let _open = limits.stats.connection();
    let Ok(local) = stream.local_addr() else {
        return;
    };
    // The handshake, the gate and the dial are boxed: this task lives on as the tunnel, and
    // its state should not keep room for their (large) futures.
    let handshake = Box::pin(tokio::time::timeout(limits.header_timeout, async move {
        let proto = match &limits.proxy_auth {
            Some(cred) => {
                Socks5ServerProtocol::accept_password_auth(stream, |user, pass| {
                    cred.matches(user.as_bytes(), pass.as_bytes())
                })
                .await?
                .0
            }
            None => Socks5ServerProtocol::accept_no_auth(stream).await?,
        };
        proto.read_command().await
    }))
    .await;
    let (proto, command, target) = match handshake {
        Err(_) => {
            tracing::debug!(client = %peer, "SOCKS handshake timed out");
            return;
        }
        Ok(Err(e)) => {
            // fast-socks5 has already replied where the protocol has a reply for it (bad
            // address type, unknown command).
            tracing::debug!(client = %peer, error = %e, "SOCKS handshake failed");
            return;
        }
        Ok(Ok(x)) => x,
    };
    match command {
        Socks5Command::TCPConnect => {}
        Socks5Command::UDPAssociate if limits.udp => {
            associate(gate, relays, limits, proto, peer, local, &target).await;
            return;
        }
        Socks5Command::UDPAssociate | Socks5Command::TCPBind => {
            let _ = proto.reply_error(&ReplyError::CommandNotSupported).await;
            return;
        }
    }
    let target = match target {
        TargetAddr::Ip(sa) => Target::net(Host::from_ip(sa.ip()), sa.port()),
        TargetAddr::Domain(name, port) => match Host::parse(&name) {
            Ok(h) => Target::net(h, port),
            Err(e) => {
                tracing::info!(client = %peer, error = %e, "SOCKS target is not a valid host");
                let _ = proto.reply_error(&ReplyError::ConnectionNotAllowed).await;
                return;
            }
        },
    };
    let meta = RequestMeta::new(Protocol::Socks5Tcp, target).with_client(peer);
    let route = match Box::pin(gate.admit(&meta)).await {
        Admission::Allow(route) if !route.intercept => route,
        Admission::Allow(route) => match interceptor.accepts(&meta, &route) {
            Ok(()) => route,
            Err(_) => {
                let _ = proto.reply_error(&ReplyError::ConnectionNotAllowed).await;
                return;
            }
        },
        Admission::Deny(_) => {
            let _ = proto.reply_error(&ReplyError::ConnectionNotAllowed).await;
            return;
        }
        Admission::Fail(f) => {
            let _ = proto.reply_error(&failure_reply(f.kind)).await;
            return;
        }
    };
    let upstream = match Box::pin(dialer.dial(&route)).await {
        Ok(u) => u,
        Err(f) => {
            // Recorded by the gate as a failure; the log has it at debug only.
            tracing::debug!(client = %peer, target = %meta.target, error = %f, "SOCKS upstream failed");
            gate.failed(&meta, &route, &f);
            let _ = proto.reply_error(&failure_reply(f.kind)).await;
            return;
        }
    };
    let bound = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
    // Closed when a narrower policy no longer allows the target.
    let lease = gate.hold(&meta, &route);
    let Ok(mut client) = Box::pin(proto.reply_success(bound)).await else {
        return;
    };
    let mut upstream = upstream;
    if route.verify_sni
        && Box::pin(proxy_io::verify_hello(
            gate,
            &meta,
            &route,
            &lease,
            &mut client,
            Vec::new(),
            &mut upstream,
        ))
        .await
        .is_err()
    {
        // Refused (recorded by the gate) or the upstream failed: nothing was relayed.
        return;
    }
    let open = limits.stats.tunnel();
    if route.intercept {
        let interceptor = interceptor.clone();
        let tunnel = Intercepted {
            client,
            upstream,
            meta,
            route,
            lease,
        };
        tracker.spawn(async move {
            let _permit = permit;
            proxy_io::intercept(&*interceptor, tunnel, open).await;
        });
        return;
    }
    drop(route);
    // The tunnel gets a task of its own, whose state is only the tunnel; this one ends.
    let idle = limits.idle_timeout;
    match proxy_io::into_tcp(upstream) {
        Ok(tcp) => tracker.spawn(async move {
            let _permit = permit;
            let (up, down) =
                proxy_io::tunnel_tcp_until(client, tcp, idle, || lease.revoked()).await;
            open.closed(up, down);
            tracing::debug!(client = %peer, up, down, "SOCKS tunnel closed");
        }),
        Err(Some(other)) => tracker.spawn(async move {
            let _permit = permit;
            let (up, down) = proxy_io::tunnel_until(client, other, idle, || lease.revoked()).await;
            open.closed(up, down);
            tracing::debug!(client = %peer, up, down, "SOCKS tunnel closed");
        }),
        Err(None) => {}
    }
}
