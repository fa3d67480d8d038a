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
//! (docs/socks.md). [`serve_stream`] serves one connection accepted elsewhere, over any byte
//! stream (the fuzz harness drives it in memory).
//!
//! netproxy's own steps of the protocol are plain functions: [`read_request`] (greeting,
//! authentication and request, over any stream), [`target`] (a SOCKS5 address to a canonical
//! [`Target`]), [`read_datagram`] and [`write_datagram_header`] (the UDP header).
#![forbid(unsafe_code)]

mod lru;
mod request;
mod udp;

pub use proxy_io::Limits;
pub use request::{Request, read_request, target};
pub use udp::{ASSOCIATION_EVENT, VERDICTS, read_datagram, write_datagram_header};

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use fast_socks5::server::Socks5ServerProtocol;
use fast_socks5::util::target_addr::TargetAddr;
use fast_socks5::{ReplyError, Socks5Command};
use proxy_core::{
    Admission, Dialer, Gate, Intercepted, Interceptor, Protocol, RequestMeta, Target,
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
                let _ = stream.set_nodelay(true);
                let Ok(local) = stream.local_addr() else {
                    return;
                };
                let parts = Parts {
                    gate: &*gate,
                    dialer: &*dialer,
                    interceptor: &interceptor,
                    limits: &limits,
                    tracker: &tracker,
                    relays: &*relays,
                };
                let client = Accepted {
                    stream,
                    peer,
                    local,
                };
                serve(parts, client, permit).await;
            }
        },
    )
    .await;
    tracker.idle().await;
}

/// A client connection accepted elsewhere, for [`serve_stream`].
#[derive(Debug)]
pub struct Accepted<S> {
    /// The client's byte stream.
    pub stream: S,
    /// The client's address (the audit's `client.address`; a UDP association relays only
    /// datagrams from its IP).
    pub peer: SocketAddr,
    /// The address the client reached: a UDP association's relay socket is bound on its IP.
    pub local: SocketAddr,
}

/// Serves one client connection that was accepted elsewhere, over any byte stream, exactly as
/// [`run_with_relays`] serves each connection it accepts (the header timeout, the gate, the
/// dialer, tunnels and UDP associations), and returns once it and every task it started (its
/// tunnel, an intercepted session) have ended. The fuzz harness drives it over an in-memory
/// stream; [`Limits::max_connections`] does not apply to a single connection.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::sync::Arc;
/// use proxy_core::NoInterception;
/// use proxy_socks::{Accepted, LocalRelays, Limits, serve_stream};
/// use proxy_test_support::{RecordingDialer, StubGate};
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// let (mut client, server) = tokio::io::duplex(1024);
/// // No authentication, then CONNECT 10.0.0.1:80, which the stub gate refuses.
/// client.write_all(&[5, 1, 0, 5, 1, 0, 1, 10, 0, 0, 1, 0, 80]).await.unwrap();
/// let accepted = Accepted {
///     stream: server,
///     peer: "127.0.0.1:40000".parse().unwrap(),
///     local: "127.0.0.1:1080".parse().unwrap(),
/// };
/// let (gate, dialer) = (Arc::new(StubGate::new()), Arc::new(RecordingDialer::new()));
/// let relays = Arc::new(LocalRelays);
/// serve_stream(accepted, gate, dialer, Arc::new(NoInterception), Limits::default(), relays).await;
/// let mut back = Vec::new();
/// client.read_to_end(&mut back).await.unwrap();
/// assert_eq!(back[..4], [5, 0, 5, 2]); // no authentication; refused by policy
/// # }
/// ```
pub async fn serve_stream<G, D, I, S>(
    client: Accepted<S>,
    gate: Arc<G>,
    dialer: Arc<D>,
    interceptor: Arc<I>,
    limits: Limits,
    relays: Arc<dyn RelaySockets>,
) where
    G: Gate + 'static,
    D: Dialer<Conn: Stream> + 'static,
    I: Interceptor<S, D::Conn> + 'static,
    S: Stream,
{
    let tracker = Arc::new(proxy_io::Tracker::default());
    // The connection's slot (a listener's semaphore has many; this one has one).
    let Ok(permit) = Arc::new(tokio::sync::Semaphore::new(1)).try_acquire_owned() else {
        return;
    };
    let parts = Parts {
        gate: &*gate,
        dialer: &*dialer,
        interceptor: &interceptor,
        limits: &limits,
        tracker: &tracker,
        relays: &*relays,
    };
    serve(parts, client, permit).await;
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
async fn associate<G: Gate, S: Stream>(
    gate: &G,
    relays: &dyn RelaySockets,
    limits: &Limits,
    proto: Socks5ServerProtocol<S, fast_socks5::server::states::CommandRead>,
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

async fn serve<G, D, I, S>(
    parts: Parts<'_, G, D, I>,
    client: Accepted<S>,
    permit: tokio::sync::OwnedSemaphorePermit,
) where
    G: Gate,
    D: Dialer<Conn: Stream>,
    I: Interceptor<S, D::Conn> + 'static,
    S: Stream,
{
    let Parts {
        gate,
        dialer,
        interceptor,
        limits,
        tracker,
        relays,
    } = parts;
    let Accepted {
        stream,
        peer,
        local,
    } = client;
    let _open = limits.stats.connection();
    // The handshake, the gate and the dial are boxed: this task lives on as the tunnel, and
    // its state should not keep room for their (large) futures.
    let handshake = Box::pin(tokio::time::timeout(
        limits.header_timeout,
        read_request(stream, limits.proxy_auth.as_deref()),
    ))
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
    let target: Target = match request::target(&target) {
        // Port 0 names no service: refused like an invalid host, before the gate (HTTP answers
        // such an authority 400).
        Ok(t) if t.port() == 0 => {
            tracing::info!(client = %peer, target = %t, "SOCKS CONNECT to port 0");
            let _ = proto.reply_error(&ReplyError::ConnectionNotAllowed).await;
            return;
        }
        Ok(t) => t,
        Err(e) => {
            tracing::info!(client = %peer, error = %e, "SOCKS target is not a valid host");
            let _ = proto.reply_error(&ReplyError::ConnectionNotAllowed).await;
            return;
        }
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
    // Between two TCP sockets (always, in netproxy) the tunnel copies between the sockets.
    match proxy_io::into_tcp(client) {
        Ok(client) => match proxy_io::into_tcp(upstream) {
            Ok(tcp) => spawn_tunnel(tracker, permit, open, peer, move || {
                proxy_io::tunnel_tcp_until(client, tcp, idle, move || lease.revoked())
            }),
            Err(Some(other)) => spawn_tunnel(tracker, permit, open, peer, move || {
                proxy_io::tunnel_until(client, other, idle, move || lease.revoked())
            }),
            Err(None) => {}
        },
        Err(Some(client)) => spawn_tunnel(tracker, permit, open, peer, move || {
            proxy_io::tunnel_until(client, upstream, idle, move || lease.revoked())
        }),
        Err(None) => {}
    }
}

/// Runs a tunnel (`tunnel` makes the future that gives the bytes copied each way) in a task of
/// its own that holds the connection's slot, and counts it in the stats when it ends.
fn spawn_tunnel<T>(
    tracker: &Arc<proxy_io::Tracker>,
    permit: tokio::sync::OwnedSemaphorePermit,
    open: proxy_io::Open,
    peer: SocketAddr,
    tunnel: impl FnOnce() -> T + Send + 'static,
) where
    T: Future<Output = (u64, u64)> + Send + 'static,
{
    tracker.spawn(tunnel_task(permit, open, peer, tunnel));
}

/// The tunnel's task. It makes the tunnel's future itself: a task that awaited a future it was
/// given would hold it twice (rustc keeps room for the argument and for the awaited copy), and
/// an idle tunnel is mostly that future (docs/benchmarks.md).
async fn tunnel_task<T>(
    permit: tokio::sync::OwnedSemaphorePermit,
    open: proxy_io::Open,
    peer: SocketAddr,
    tunnel: impl FnOnce() -> T,
) where
    T: Future<Output = (u64, u64)>,
{
    let _permit = permit;
    let (up, down) = tunnel().await;
    open.closed(up, down);
    tracing::debug!(client = %peer, up, down, "SOCKS tunnel closed");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tunnel's task, made as `serve` makes it, holds the tunnel's future once, plus a
    /// little (a task awaiting a future it was given would hold it twice).
    #[tokio::test]
    async fn a_tunnel_task_holds_its_tunnel_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let connect = || TcpStream::connect(listener.local_addr().unwrap());
        let (a, b) = (connect().await.unwrap(), connect().await.unwrap());
        let idle = std::time::Duration::from_secs(1);
        let lease = proxy_core::Lease::none();
        let tunnel = proxy_io::tunnel_tcp_until(a, b, idle, move || lease.revoked());
        let size = std::mem::size_of_val(&tunnel);
        let (a, b) = (connect().await.unwrap(), connect().await.unwrap());
        let permit = Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .unwrap();
        let open = Arc::new(proxy_io::Stats::default()).tunnel();
        let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 1));
        let lease = proxy_core::Lease::none();
        let task = tunnel_task(permit, open, peer, move || {
            proxy_io::tunnel_tcp_until(a, b, idle, move || lease.revoked())
        });
        let whole = std::mem::size_of_val(&task);
        assert!(
            whole <= size + 256,
            "{whole} bytes for a {size}-byte tunnel"
        );
    }
}
