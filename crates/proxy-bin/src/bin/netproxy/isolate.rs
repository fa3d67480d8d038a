//! `run --isolate` (docs/isolate.md): the namespace holder started, the proxy's listeners and
//! the resolver sockets bound inside the command's network namespace, and the command started
//! in it.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use proxy_isolate::{KernelSettings, Refusal, Step};

/// What isolation gives `run`: the holder (kept until the command is gone), the listeners to
/// serve, and the sockets the command's resolver sends its lookups to.
#[derive(Debug)]
pub(crate) struct Isolation {
    #[cfg(target_os = "linux")]
    pub(crate) holder: Arc<proxy_isolate::Holder>,
    /// The HTTP proxy's listener, on 127.0.0.1 inside the namespace.
    pub(crate) http: std::net::TcpListener,
    /// The SOCKS5 listener, when SOCKS5 is on.
    pub(crate) socks: Option<std::net::TcpListener>,
    /// For each resolver address of `/etc/resolv.conf`: a UDP socket and a TCP listener on
    /// port 53 inside the namespace.
    pub(crate) resolvers: Vec<(std::net::UdpSocket, std::net::TcpListener)>,
    /// Resolver addresses that could not be bound (the command's lookups to them still fail
    /// at once, but are not recorded).
    pub(crate) unserved: Vec<(IpAddr, std::io::Error)>,
}

/// The step the tests make fail (`NETPROXY_ISOLATE_FAULT`, debug builds only): the refusals a
/// test machine cannot produce, such as AppArmor's, go through the same path as real ones.
fn fault() -> Option<Step> {
    if cfg!(debug_assertions) {
        std::env::var("NETPROXY_ISOLATE_FAULT")
            .ok()
            .and_then(|s| s.parse().ok())
    } else {
        None
    }
}

/// Starts the holder and binds everything `run` needs inside the namespace; then drops the
/// holder's capabilities. Blocking (a few milliseconds).
#[cfg(target_os = "linux")]
pub(crate) fn set_up(socks: bool) -> Result<Isolation, Refusal> {
    // This very binary, even if its file was replaced or removed since netproxy started.
    let holder = proxy_isolate::Holder::start(Path::new("/proc/self/exe"), fault())?;
    let listen_failed = |e: std::io::Error| {
        Refusal::diagnose(Step::Listen, e.raw_os_error(), &e, &KernelSettings::read())
    };
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let http = holder.tcp_listener(loopback).map_err(listen_failed)?;
    let socks = if socks {
        Some(holder.tcp_listener(loopback).map_err(listen_failed)?)
    } else {
        None
    };
    // The addresses the command's resolver uses: /etc/resolv.conf is the same file inside.
    let conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut resolvers = Vec::new();
    let mut unserved = Vec::new();
    for ip in proxy_isolate::resolvers(&conf) {
        match holder.resolver(ip) {
            Ok(pair) => resolvers.push(pair),
            Err(e) => unserved.push((ip, e)),
        }
    }
    holder.seal().map_err(listen_failed)?;
    Ok(Isolation {
        holder: Arc::new(holder),
        http,
        socks,
        resolvers,
        unserved,
    })
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn set_up(_socks: bool) -> Result<Isolation, Refusal> {
    let _ = fault();
    Err(Refusal::unsupported())
}

/// Where `run`'s SOCKS5 UDP relay sockets are bound: by the holder inside the command's
/// namespace once [`Relays::isolate`] has given it one (before anything is served), else in
/// netproxy's own namespace (a run without isolation).
#[derive(Debug, Default)]
pub(crate) struct Relays {
    #[cfg(target_os = "linux")]
    holder: std::sync::OnceLock<Arc<proxy_isolate::Holder>>,
    /// Requests to the holder not answered yet: a holder that stops answering (the command can
    /// stop it: same user) ties up at most [`MAX_WAITING`] blocking threads.
    waiting: Arc<std::sync::atomic::AtomicUsize>,
}

/// The most relay-socket requests waiting on the holder at once; more are refused at once
/// (REP 0x01). Each takes well under a millisecond from a holder that answers.
const MAX_WAITING: usize = 8;

impl Relays {
    /// From now on, relay sockets are made inside `holder`'s namespace.
    #[cfg(target_os = "linux")]
    pub(crate) fn isolate(&self, holder: Arc<proxy_isolate::Holder>) {
        let _ = self.holder.set(holder);
    }
}

impl proxy_socks::RelaySockets for Relays {
    fn bind(&self, ip: IpAddr) -> proxy_socks::RelaySocket<'_> {
        #[cfg(target_os = "linux")]
        if let Some(holder) = self.holder.get() {
            use std::sync::atomic::Ordering;
            let holder = holder.clone();
            let waiting = self.waiting.clone();
            if waiting.fetch_add(1, Ordering::AcqRel) >= MAX_WAITING {
                waiting.fetch_sub(1, Ordering::AcqRel);
                return Box::pin(std::future::ready(Err(std::io::Error::other(
                    "the namespace holder is not answering",
                ))));
            }
            // A round trip to the holder: well under a millisecond, but blocking.
            return Box::pin(async move {
                let socket = tokio::task::spawn_blocking(move || {
                    let socket = holder.udp_socket(SocketAddr::new(ip, 0));
                    waiting.fetch_sub(1, Ordering::AcqRel);
                    socket
                })
                .await
                .map_err(std::io::Error::other)??;
                // Take only what was asked for: a UDP socket of that address, on a port.
                let bound = socket.local_addr()?;
                if bound.ip() != ip
                    || bound.port() == 0
                    || rustix::net::sockopt::socket_type(&socket)? != rustix::net::SocketType::DGRAM
                {
                    return Err(std::io::Error::other(
                        "the namespace holder sent another socket than the one asked for",
                    ));
                }
                Ok(socket)
            });
        }
        proxy_socks::LocalRelays.bind(ip)
    }
}
