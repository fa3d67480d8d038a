//! `proxy-socks` is netproxy's SOCKS5 front-end: the no-authentication method and `CONNECT`
//! (IPv4, IPv6 and domain address types), each request judged by the same [`Gate`] as HTTP with
//! protocol `socks5_tcp`, dialled by the same [`Dialer`], and tunnelled by `proxy-io`.
//!
//! It decides nothing itself and never resolves a name: a domain target goes to the gate as a
//! name (that is why clients should use `socks5h://`). Protocol framing is fast-socks5's
//! type-state server; its DNS and proxy helpers are never used, because they resolve with the
//! system resolver and dial without the policy. Replies follow interface.md §4: `0x02` for a
//! refusal, `0x04` unreachable (including a name that does not resolve), `0x05` refused,
//! `0x07` for an unsupported command (BIND, and UDP ASSOCIATE when `enable_socks5_udp` is off),
//! `0x08` for a bad address type. A greeting or request that is malformed, truncated or slower
//! than the header timeout gets its reply or a closed connection.
//!
//! The entry point is [`run`]: the caller binds the listener and decides what shutdown means.
#![forbid(unsafe_code)]

mod lru;
mod udp;

pub use udp::{ASSOCIATION_EVENT, VERDICTS};

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use fast_socks5::server::Socks5ServerProtocol;
use fast_socks5::util::target_addr::TargetAddr;
use fast_socks5::{ReplyError, Socks5Command};
use proxy_core::{
    Admission, Dialer, Gate, Host, Protocol, ProxyCredential, RequestMeta, Target, UpstreamFailure,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// The SOCKS front-end's limits (from `[network.limits]`).
#[derive(Debug, Clone)]
pub struct Limits {
    /// From accept until the greeting and the request are read.
    pub header_timeout: Duration,
    /// A tunnel with no bytes either way for this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once; further ones wait in the accept backlog.
    pub max_connections: usize,
    /// Whether UDP ASSOCIATE is served (`enable_socks5_udp`); otherwise it is answered 0x07.
    pub udp: bool,
    /// When set, clients must authenticate with this username and password (RFC 1929) and
    /// no-auth is not offered; otherwise only no-auth is.
    pub proxy_auth: Option<Arc<ProxyCredential>>,
    /// Live counts (connections, tunnels, bytes) for the metrics.
    pub stats: Arc<proxy_io::Stats>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_connections: 4096,
            udp: true,
            proxy_auth: None,
            stats: Arc::default(),
        }
    }
}

/// Serves SOCKS5 from `listener` until `shutdown` completes, then stops accepting and waits for
/// the open tunnels (the caller bounds that wait).
pub async fn run<G, D, S>(
    listener: TcpListener,
    gate: Arc<G>,
    dialer: Arc<D>,
    limits: Limits,
    shutdown: S,
) where
    G: Gate + 'static,
    D: Dialer + 'static,
    D::Conn: AsyncRead + AsyncWrite + Unpin + Send + 'static,
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
            let limits = limits.clone();
            async move {
                serve(&*gate, &*dialer, &limits, stream, peer, &tracker, permit).await;
            }
        },
    )
    .await;
    tracker.idle().await;
}

/// The reply for an admission failure or a dial failure.
fn failure_reply(kind: UpstreamFailure, message: &str) -> ReplyError {
    match kind {
        UpstreamFailure::DnsFailed => ReplyError::HostUnreachable,
        UpstreamFailure::ConnectFailed if message.contains("refused") => {
            ReplyError::ConnectionRefused
        }
        UpstreamFailure::ConnectFailed | UpstreamFailure::UpstreamTimeout => {
            ReplyError::HostUnreachable
        }
        _ => ReplyError::GeneralFailure,
    }
}

async fn serve<G, D>(
    gate: &G,
    dialer: &D,
    limits: &Limits,
    stream: TcpStream,
    peer: SocketAddr,
    tracker: &Arc<proxy_io::Tracker>,
    permit: tokio::sync::OwnedSemaphorePermit,
) where
    G: Gate,
    D: Dialer,
    D::Conn: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
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
            let ip = udp::relay_ip(local);
            let idle = limits.idle_timeout;
            let ended = fast_socks5::server::run_udp_proxy_custom(
                proto,
                &target,
                Some(ip),
                ip,
                |inbound| udp::relay(gate, peer, &target, &limits.stats, inbound.into(), idle),
            )
            .await;
            if let Err(e) = ended {
                tracing::debug!(client = %peer, error = %e, "UDP association failed");
            }
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
        Admission::Allow(_) | Admission::Deny(_) => {
            let _ = proto.reply_error(&ReplyError::ConnectionNotAllowed).await;
            return;
        }
        Admission::Fail(f) => {
            let _ = proto.reply_error(&failure_reply(f.kind, &f.message)).await;
            return;
        }
    };
    let upstream = match Box::pin(dialer.dial(&route)).await {
        Ok(u) => u,
        Err(f) => {
            tracing::warn!(client = %peer, target = %meta.target, error = %f, "SOCKS upstream failed");
            let _ = proto.reply_error(&failure_reply(f.kind, &f.message)).await;
            return;
        }
    };
    let bound = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
    // Closed when a narrower policy no longer allows the target.
    let lease = gate.hold(&meta, &route);
    drop(route);
    let Ok(client) = Box::pin(proto.reply_success(bound)).await else {
        return;
    };
    // The tunnel gets a task of its own, whose state is only the tunnel; this one ends.
    let idle = limits.idle_timeout;
    let open = limits.stats.tunnel();
    tracker.spawn(async move {
        let _permit = permit;
        let (up, down) = match proxy_io::into_tcp(upstream) {
            Ok(tcp) => proxy_io::tunnel_tcp_until(client, tcp, idle, || lease.revoked()).await,
            Err(Some(other)) => {
                proxy_io::tunnel_until(client, other, idle, || lease.revoked()).await
            }
            Err(None) => return,
        };
        open.closed(up, down);
        tracing::debug!(client = %peer, up, down, "SOCKS tunnel closed");
    });
}
