//! The traits the transports meet through: [`Gate`] admits a request (and a request inside an
//! intercepted tunnel), [`Dialer`] connects an admitted route. Both are runtime-agnostic; the
//! front-ends add the I/O bounds they need on [`Dialer::Conn`].

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
#[cfg(unix)]
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
#[cfg(unix)]
use std::sync::Arc;

use crate::decision::{Decision, Reason};
use crate::target::{Mode, RequestMeta};

/// How an admitted request is reached.
///
/// ```
/// use proxy_core::Via;
/// let via = Via::UpstreamProxy {
///     proxy: vec!["127.0.0.1:3129".parse().unwrap()],
///     authority: "example.com:443".into(),
///     connect: true,
///     checked: vec!["127.0.0.2".parse().unwrap()],
/// };
/// assert!(matches!(via, Via::UpstreamProxy { .. }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// Directly, to one of these checked addresses, tried in order.
    Direct(Vec<SocketAddr>),
    /// Through an upstream HTTP proxy at one of these addresses, asking it for `authority`.
    UpstreamProxy {
        /// The upstream proxy's addresses, tried in order.
        proxy: Vec<SocketAddr>,
        /// The `host:port` to ask the upstream for.
        authority: String,
        /// True when the dialer opens a `CONNECT` tunnel through the upstream (tunnels);
        /// false when the front-end sends the request itself in absolute form (plain HTTP).
        connect: bool,
        /// The target's addresses the gate resolved and checked (the upstream proxy resolves
        /// the name again on its own): what a narrower policy judges the connection by.
        checked: Vec<IpAddr>,
    },
    /// Over a unix socket: the very socket the gate opened and checked, never a path to open
    /// again.
    Unix(UnixSocket),
}

/// A unix socket the gate admitted, held by the descriptor it was checked through (an `O_PATH`
/// descriptor on Linux) beside the path it was asked for. The front-end connects through that
/// descriptor ([`UnixSocket::connect_path`]), so a path swapped after the check cannot send the
/// connection elsewhere. Cloning shares the descriptor; two values are equal when they name the
/// same path and the same socket (device and inode).
///
/// ```
/// # #[cfg(unix)] {
/// use proxy_core::UnixSocket;
/// let fd = std::fs::File::open("/").unwrap().into();
/// let s = UnixSocket::new("/run/docker.sock".into(), fd, 1, 2);
/// assert_eq!(s.path(), std::path::Path::new("/run/docker.sock"));
/// assert_eq!(s.identity(), (1, 2));
/// assert_eq!(s.clone(), s);
/// # }
/// ```
#[derive(Clone)]
pub struct UnixSocket {
    path: PathBuf,
    #[cfg(unix)]
    fd: Arc<OwnedFd>,
    dev: u64,
    ino: u64,
}

impl UnixSocket {
    /// A checked socket: the path asked for, the descriptor it was opened as, and the device
    /// and inode that descriptor refers to.
    #[cfg(unix)]
    pub fn new(path: PathBuf, fd: OwnedFd, dev: u64, ino: u64) -> Self {
        Self {
            path,
            fd: Arc::new(fd),
            dev,
            ino,
        }
    }

    /// The path the request named (for messages and logs; never opened again).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The socket's device and inode, as checked.
    pub fn identity(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }

    /// The descriptor the socket was checked through.
    #[cfg(unix)]
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The path to `connect(2)` to: `/proc/self/fd/N` of the checked descriptor, which reaches
    /// that very socket whatever happened to [`UnixSocket::path`] since. Valid as long as this
    /// value (or a clone) is alive.
    #[cfg(target_os = "linux")]
    pub fn connect_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }
}

impl PartialEq for UnixSocket {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.dev == other.dev && self.ino == other.ino
    }
}

impl Eq for UnixSocket {}

impl fmt::Debug for UnixSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("UnixSocket");
        d.field("path", &self.path);
        #[cfg(unix)]
        d.field("fd", &self.fd.as_raw_fd());
        d.field("dev", &self.dev).field("ino", &self.ino).finish()
    }
}

/// An admitted request's route: how to reach it, whether to intercept it or check its TLS
/// server name, and the decision that admitted it.
///
/// ```
/// use proxy_core::{Decision, Route, Via};
/// let route = Route::direct(vec!["127.0.0.1:8080".parse().unwrap()], Decision::allow());
/// assert!(!route.intercept);
/// assert!(matches!(route.via, Via::Direct(ref a) if a.len() == 1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// How to reach the target.
    pub via: Via,
    /// Whether to terminate TLS and inspect the inner requests: the tunnel is handed to the
    /// interceptor.
    pub intercept: bool,
    /// With `intercept`: the tunnel is intercepted only when its first bytes are a TLS
    /// ClientHello (a credential destination); the interceptor relays any other stream, or a
    /// client that waits for the server to speak first, as an opaque tunnel. False: a stream
    /// that is not TLS is closed (limited mode, hooks: fail closed).
    pub opaque_unless_tls: bool,
    /// For an opaque tunnel (`verify_sni`): the front-end reads the client's first bytes and
    /// relays nothing until the gate has judged them ([`Gate::admit_hello`]).
    pub verify_sni: bool,
    /// The decision that admitted it.
    pub decision: Decision,
}

impl Route {
    /// A direct route to checked addresses, not intercepted.
    pub fn direct(addrs: Vec<SocketAddr>, decision: Decision) -> Self {
        Self {
            via: Via::Direct(addrs),
            intercept: false,
            opaque_unless_tls: false,
            verify_sni: false,
            decision,
        }
    }
}

/// An upstream failure, by its wire reason (docs/responses.md): a 502, or a 504 for a timeout.
/// Its kind also chooses the SOCKS reply (`0x04` unreachable, `0x05` refused).
///
/// ```
/// use proxy_core::UpstreamFailure;
/// assert_eq!(UpstreamFailure::UpstreamTimeout.http_status(), 504);
/// assert_eq!(UpstreamFailure::ConnectFailed.as_str(), "connect_failed");
/// // A refusal is a connect failure on the wire.
/// assert_eq!(UpstreamFailure::ConnectRefused.as_str(), "connect_failed");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamFailure {
    /// The name could not be resolved.
    DnsFailed,
    /// No checked address accepted a connection.
    ConnectFailed,
    /// No checked address accepted a connection, and one refused it (`ECONNREFUSED`), or an
    /// upstream proxy refused the tunnel. Its wire name is `connect_failed`, as docs/responses.md
    /// §4 names no other; SOCKS answers it `0x05`.
    ConnectRefused,
    /// The upstream's TLS handshake or certificate failed.
    UpstreamTlsFailed,
    /// No response head arrived in time.
    UpstreamTimeout,
    /// The upstream broke the protocol or closed early.
    UpstreamError,
}

impl UpstreamFailure {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            UpstreamFailure::DnsFailed => "dns_failed",
            UpstreamFailure::ConnectFailed | UpstreamFailure::ConnectRefused => "connect_failed",
            UpstreamFailure::UpstreamTlsFailed => "upstream_tls_failed",
            UpstreamFailure::UpstreamTimeout => "upstream_timeout",
            UpstreamFailure::UpstreamError => "upstream_error",
        }
    }

    /// The HTTP status: 504 for a timeout, 502 otherwise.
    pub const fn http_status(self) -> u16 {
        match self {
            UpstreamFailure::UpstreamTimeout => 504,
            _ => 502,
        }
    }

    /// The kind of a failed `connect(2)`: [`UpstreamFailure::ConnectRefused`] when the peer
    /// refused it, [`UpstreamFailure::ConnectFailed`] otherwise.
    ///
    /// ```
    /// use std::io::{Error, ErrorKind};
    /// use proxy_core::UpstreamFailure;
    /// let refused = Error::from(ErrorKind::ConnectionRefused);
    /// assert_eq!(UpstreamFailure::of_connect_error(&refused), UpstreamFailure::ConnectRefused);
    /// let unreachable = Error::from(ErrorKind::HostUnreachable);
    /// assert_eq!(UpstreamFailure::of_connect_error(&unreachable), UpstreamFailure::ConnectFailed);
    /// ```
    pub fn of_connect_error(error: &std::io::Error) -> Self {
        match error.kind() {
            std::io::ErrorKind::ConnectionRefused => UpstreamFailure::ConnectRefused,
            _ => UpstreamFailure::ConnectFailed,
        }
    }
}

impl fmt::Display for UpstreamFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An I/O error as a short phrase in plain words, for the one-sentence messages of failures:
/// the usual network errors by their kind (`the connection was refused`), any other by the
/// system's text without its `(os error N)` suffix. Never a debug dump.
///
/// ```
/// use std::io::{Error, ErrorKind};
/// use proxy_core::io_error_text;
/// assert_eq!(io_error_text(&Error::from(ErrorKind::ConnectionRefused)), "the connection was refused");
/// assert_eq!(io_error_text(&Error::from_raw_os_error(28)), "no space left on device");
/// ```
pub fn io_error_text(error: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    let text = match error.kind() {
        K::ConnectionRefused => "the connection was refused",
        K::ConnectionReset => "the connection was reset",
        K::ConnectionAborted => "the connection was aborted",
        K::HostUnreachable => "the host is unreachable",
        K::NetworkUnreachable => "the network is unreachable",
        K::NetworkDown => "the network is down",
        K::TimedOut => "it timed out",
        K::AddrNotAvailable => "the address is not available here",
        K::NotFound => "it does not exist",
        K::PermissionDenied => "permission was denied",
        K::UnexpectedEof => "the connection closed early",
        _ => {
            let full = error.to_string();
            let text = full.split(" (os error").next().unwrap_or(&full);
            let mut chars = text.chars();
            return match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => "an unknown error".to_owned(),
            };
        }
    };
    text.to_owned()
}

/// A failure to admit or reach a target that is not a policy refusal.
///
/// ```
/// use proxy_core::{Failure, UpstreamFailure};
/// let f = Failure::new(UpstreamFailure::DnsFailed, "no answer for example.com");
/// assert_eq!(f.kind.http_status(), 502);
/// assert_eq!(f.to_string(), "dns_failed: no answer for example.com");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct Failure {
    /// What failed.
    pub kind: UpstreamFailure,
    /// One human sentence saying what went wrong, without its final period (never a credential,
    /// never a debug dump).
    pub message: String,
}

impl Failure {
    /// A failure.
    pub fn new(kind: UpstreamFailure, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// The gate's answer.
///
/// ```
/// use proxy_core::{Admission, Failure, UpstreamFailure};
/// let a = Admission::Fail(Failure::new(UpstreamFailure::DnsFailed, "SERVFAIL"));
/// assert!(matches!(a, Admission::Fail(ref f) if f.kind.http_status() == 502));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead, along this route.
    Allow(Route),
    /// Refused.
    Deny(Decision),
    /// The target could not be checked (e.g. its name did not resolve): fail closed.
    Fail(Failure),
}

/// Admits or refuses one request. Implementations evaluate the policy, resolve an allowed name
/// once, check every address, and emit exactly one audit event per call.
///
/// ```
/// use proxy_core::{Admission, Decision, Gate, InnerVerdict, Mode, Reason, RequestHead, RequestMeta, Route, judge_inner};
/// #[derive(Debug)]
/// struct DenyAll;
/// impl Gate for DenyAll {
///     async fn admit(&self, _meta: &RequestMeta) -> Admission {
///         Admission::Deny(Decision::deny(Reason::NotAllowed))
///     }
///     async fn admit_inner(&self, tunnel: &RequestMeta, route: &Route, inner: &RequestMeta, _head: &RequestHead<'_>) -> InnerVerdict {
///         InnerVerdict::from(judge_inner(tunnel, route, inner, Mode::Full))
///     }
/// }
/// ```
pub trait Gate: Send + Sync {
    /// Decides one request.
    fn admit(&self, meta: &RequestMeta) -> impl Future<Output = Admission> + Send;

    /// Decides one request inside an intercepted tunnel: `tunnel` and `route` are the tunnel's
    /// request and the route [`Gate::admit`] gave it, `inner` the request read inside it
    /// (protocol [`Protocol::Https`](crate::Protocol::Https), its Host as target, its method).
    /// `head` is its path, query and headers, for the hooks of its host. The inner request must
    /// name the tunnel's target, match a hook when its host has hooks, and use a method the
    /// mode in force allows ([`judge_inner`] without hooks); nothing is resolved again (the tunnel's connection is already open
    /// to the addresses checked at admission; a narrower policy revokes the tunnel's lease).
    /// Implementations emit exactly one audit event per call, about `inner`.
    fn admit_inner(
        &self,
        tunnel: &RequestMeta,
        route: &Route,
        inner: &RequestMeta,
        head: &RequestHead<'_>,
    ) -> impl Future<Output = InnerVerdict> + Send;

    /// Decides whether an opaque tunnel admitted along `route` (with `verify_sni`) may carry the
    /// stream whose first bytes are `hello`: a TLS ClientHello for the tunnel's host
    /// ([`judge_hello`]). By default the pure rule alone; a gate that records decisions records
    /// a refusal (the tunnel's admission was recorded already).
    fn admit_hello(
        &self,
        tunnel: &RequestMeta,
        route: &Route,
        hello: &crate::tls::Hello,
    ) -> impl Future<Output = Decision> + Send {
        std::future::ready(judge_hello(tunnel, route, hello))
    }

    /// A lease for a connection admitted as `meta` along `route` that stays open (a tunnel, a
    /// kept-alive upstream connection, a UDP association's verdict, an `x-unix-socket`
    /// exchange): the gate revokes it when
    /// a narrower policy no longer allows the target. By default, a lease nothing revokes.
    fn hold(&self, meta: &RequestMeta, route: &Route) -> crate::Lease {
        let _ = (meta, route);
        crate::Lease::none()
    }

    /// Told that a request admitted as `meta` along `route` could not be completed: the dial,
    /// the upstream's TLS or its answer failed (`failure`, which the front-end answers with a
    /// 502 or 504, or a SOCKS5 error reply). A gate that records decisions records it as a
    /// failure, apart from refusals ([`AuditEvent::failure`](crate::AuditEvent::failure)).
    /// Called at most once per request. By default, nothing.
    fn failed(&self, meta: &RequestMeta, route: &Route, failure: &Failure) {
        let _ = (meta, route, failure);
    }
}

/// The head of a request inside an intercepted tunnel, as its host's hooks see it: method, path
/// and query as sent (still percent-encoded), headers (names lower-case; a value that is not
/// UTF-8 is left out, so a hook that asks for that header does not match).
///
/// ```
/// use proxy_core::RequestHead;
/// let headers = [("accept", "application/json")];
/// let head = RequestHead { method: "GET", path: "/repos/a/b", query: Some("state=open"), headers: &headers };
/// assert_eq!(head.header_values("Accept").collect::<Vec<_>>(), ["application/json"]);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// The method, as sent.
    pub method: &'a str,
    /// The path, percent-encoded as sent (`/` when empty, `*` for `OPTIONS *`).
    pub path: &'a str,
    /// The query string without its `?`, when there is one.
    pub query: Option<&'a str>,
    /// The headers, names lower-case, in order.
    pub headers: &'a [(&'a str, &'a str)],
}

impl<'a> RequestHead<'a> {
    /// The values of the header `name` (any case), in order.
    pub fn header_values(&self, name: &str) -> impl Iterator<Item = &'a str> + use<'a, '_> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(move |(n, _)| *n == name)
            .map(|(_, v)| *v)
    }
}

/// The judgement of a request inside an intercepted tunnel: the decision, and when a hook of its
/// host matched, the hook's name and the actions to apply to the request before it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InnerVerdict {
    /// Allowed or refused.
    pub decision: Decision,
    /// The hook that matched, by name.
    pub hook: Option<String>,
    /// The names of the actions to apply, in order (empty when no hook matched).
    pub actions: Vec<String>,
}

impl From<Decision> for InnerVerdict {
    fn from(decision: Decision) -> Self {
        Self {
            decision,
            hook: None,
            actions: Vec::new(),
        }
    }
}

/// The judgement of a request inside an intercepted tunnel ([`Gate::admit_inner`]), with `mode`
/// the mode in force: refused (`not_allowed`) unless `inner` names the tunnel's target (host
/// and port); in limited mode refused (`method_not_allowed`) unless its method is GET, HEAD or
/// OPTIONS and it is no upgrade (which would become an opaque tunnel); otherwise the decision
/// that admitted the tunnel. Pure: it resolves nothing and records nothing.
///
/// ```
/// use proxy_core::{Decision, Mode, Protocol, Reason, RequestMeta, Route, Target, judge_inner};
/// let target = Target::parse_authority("api.example.com:443", 443).unwrap();
/// let tunnel = RequestMeta::new(Protocol::HttpsConnect, target.clone()).with_method("CONNECT");
/// let route = Route::direct(vec!["127.0.0.1:443".parse().unwrap()], Decision::allow());
/// let inner = |host: &str, method: &str| {
///     RequestMeta::new(Protocol::Https, Target::parse_authority(host, 443).unwrap()).with_method(method)
/// };
/// let d = judge_inner(&tunnel, &route, &inner("API.example.com", "GET"), Mode::Limited);
/// assert!(d.is_allowed());
/// let d = judge_inner(&tunnel, &route, &inner("api.example.com", "POST"), Mode::Limited);
/// assert_eq!(d.reason, Some(Reason::MethodNotAllowed));
/// assert!(judge_inner(&tunnel, &route, &inner("api.example.com", "POST"), Mode::Full).is_allowed());
/// let d = judge_inner(&tunnel, &route, &inner("other.example.com", "GET"), Mode::Full);
/// assert_eq!(d.reason, Some(Reason::NotAllowed));
/// ```
pub fn judge_inner(
    tunnel: &RequestMeta,
    route: &Route,
    inner: &RequestMeta,
    mode: Mode,
) -> Decision {
    let with_rule = |d: Decision| match &route.decision.rule {
        Some(rule) => d.with_rule(rule.clone()),
        None => d,
    };
    if inner.target != tunnel.target {
        return with_rule(Decision::deny(Reason::NotAllowed).with_detail(format!(
            "the request names {}, not the target of its tunnel, {}",
            inner.target, tunnel.target
        )));
    }
    if mode == Mode::Limited && (inner.upgrade || !inner.methods_allowed_in(mode)) {
        let reason = Reason::MethodNotAllowed;
        return with_rule(
            Decision::deny(reason).with_detail(format!("limited mode; {}", reason.message())),
        );
    }
    if let Some(refused) = inner.credential_refusal() {
        return with_rule(refused);
    }
    route.decision.clone()
}

/// The rule of `verify_sni` for an opaque tunnel: its first bytes must be a TLS ClientHello
/// whose server name is the tunnel's host. For a tunnel to a name the ClientHello must name it
/// (absent is refused); for an IP literal it may name nothing (the usual case) or the same
/// address. Anything but a ClientHello (another protocol, silence, a malformed or oversized
/// hello) is refused: under `verify_sni` tunnels carry TLS only. A refusal is `sni_mismatch`;
/// an allow is the tunnel's own decision.
///
/// ```
/// use proxy_core::tls::Hello;
/// use proxy_core::{Decision, Protocol, Reason, RequestMeta, Route, Target, judge_hello};
/// let tunnel = RequestMeta::new(Protocol::HttpsConnect, Target::parse_authority("api.example.com:443", 443).unwrap());
/// let route = Route::direct(vec!["127.0.0.1:443".parse().unwrap()], Decision::allow());
/// let named = |sni: &str| Hello::ClientHello { sni: Some(sni.to_owned()) };
/// assert!(judge_hello(&tunnel, &route, &named("API.example.com")).is_allowed());
/// let d = judge_hello(&tunnel, &route, &named("other.example.com"));
/// assert_eq!(d.reason, Some(Reason::SniMismatch));
/// assert!(!judge_hello(&tunnel, &route, &Hello::ClientHello { sni: None }).is_allowed());
/// ```
pub fn judge_hello(tunnel: &RequestMeta, route: &Route, hello: &crate::tls::Hello) -> Decision {
    use crate::tls::Hello;
    let refuse = |detail: String| {
        let d = Decision::deny(Reason::SniMismatch).with_detail(detail);
        match &route.decision.rule {
            Some(rule) => d.with_rule(rule.clone()),
            None => d,
        }
    };
    let Some(host) = tunnel.target.host() else {
        return refuse("not a network tunnel".to_owned());
    };
    match hello {
        Hello::ClientHello { sni: Some(name) } => match crate::Host::parse(name) {
            Ok(named) if &named == host => route.decision.clone(),
            Ok(named) => refuse(format!(
                "the TLS server name is {named}, the CONNECT host {host}"
            )),
            Err(e) => refuse(format!("the TLS server name is not a valid host: {e}")),
        },
        Hello::ClientHello { sni: None } if host.ip().is_some() => route.decision.clone(),
        Hello::ClientHello { sni: None } => refuse(format!(
            "the TLS ClientHello names no server; the CONNECT host is {host}"
        )),
        Hello::NotTls(why) => refuse(format!("not a TLS ClientHello: {why}")),
        Hello::Incomplete => refuse("no whole TLS ClientHello".to_owned()),
    }
}

/// Connects an admitted route. It never resolves a name: it dials only the addresses the gate
/// checked.
///
/// ```
/// use proxy_core::{Dialer, Failure, Route, UpstreamFailure};
/// #[derive(Debug)]
/// struct Refuse;
/// impl Dialer for Refuse {
///     type Conn = ();
///     async fn dial(&self, _route: &Route) -> Result<(), Failure> {
///         Err(Failure::new(UpstreamFailure::ConnectFailed, "refused"))
///     }
/// }
/// ```
pub trait Dialer: Send + Sync {
    /// The connection type (a tokio `TcpStream` in netproxy).
    type Conn: Send + 'static;
    /// Connects the route.
    fn dial(&self, route: &Route) -> impl Future<Output = Result<Self::Conn, Failure>> + Send;
}
