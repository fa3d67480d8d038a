//! `x-unix-socket: /abs/path` requests (docs/run.md, "Unix sockets"): the gate judges the path
//! (never the domain policy), and an allowed request is rewritten to origin-form and sent over
//! the socket the gate opened and checked: its route (`Via::Unix`) carries that descriptor, and
//! the [`Dialer`] connects through it, never through the path again.
//!
//! A web page that an attacker's name rebinds to the proxy's address can send such a request
//! (the browser sends no preflight for it). So the request is marked as possibly cross-origin
//! unless its Host (and authority) is `localhost`, `*.localhost` or a loopback literal and it
//! carries neither `Origin` nor a `Sec-Fetch-*` header; the gate refuses a marked request as
//! `unix_socket_cross_origin`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use proxy_core::{Dialer, Gate, Host, Protocol, RequestMeta, Route, Target, Via};
use proxy_io::Stream;
use tokio::sync::OwnedSemaphorePermit;

use crate::forward::{admit, not_a_tunnel, strip_hop_by_hop};
use crate::respond::{self, Body};
use crate::shared::Shared;

/// The request header naming the socket.
pub const UNIX_SOCKET_HEADER: &str = "x-unix-socket";
pub(crate) const HEADER: &str = UNIX_SOCKET_HEADER;

/// The longest socket path an `x-unix-socket` header may name, in bytes: Linux's `PATH_MAX`
/// (4096) less the terminating NUL. A longer path could never be opened.
pub const MAX_UNIX_SOCKET_PATH: usize = 4095;

/// Why an `x-unix-socket` request's header does not name a socket path
/// ([`unix_socket_path`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnixHeaderError {
    /// The request has no `x-unix-socket` header.
    #[error("no x-unix-socket header")]
    Missing,
    /// The header is given more than once.
    #[error("more than one x-unix-socket header")]
    Repeated,
    /// The value is not UTF-8.
    #[error("invalid x-unix-socket header")]
    NotUtf8,
    /// The path holds a NUL byte, which no path can.
    #[error("invalid x-unix-socket header: the path holds a NUL byte")]
    Nul,
    /// The path is longer than [`MAX_UNIX_SOCKET_PATH`].
    #[error("invalid x-unix-socket header: the path is longer than {MAX_UNIX_SOCKET_PATH} bytes")]
    TooLong,
    /// The path is not absolute (an empty value is not either). The front-end still asks the
    /// gate about it, which refuses it `not_allowed` after the proxy-state and mode checks, so
    /// the refusal is answered in the documented order and audited (docs/run.md).
    #[error("the x-unix-socket path {0:?} is not absolute")]
    Relative(PathBuf),
}

/// The socket path a request's `x-unix-socket` header values name (docs/run.md, "Unix sockets"):
/// exactly one value, UTF-8, with the HTTP whitespace around it (spaces, tabs) cut. What it
/// returns is an absolute path without a NUL byte and at most [`MAX_UNIX_SOCKET_PATH`] bytes
/// long; anything else is an error ([`UnixHeaderError`]), answered `400` except a relative
/// path, which the gate refuses. Whether the path is allowed is the gate's to judge.
///
/// ```
/// use proxy_http::{UnixHeaderError, unix_socket_path};
/// let path = unix_socket_path([&b" /run/docker.sock"[..]]).unwrap();
/// assert_eq!(path, std::path::Path::new("/run/docker.sock"));
/// assert_eq!(unix_socket_path([&b"/a"[..], b"/b"]), Err(UnixHeaderError::Repeated));
/// assert_eq!(unix_socket_path([&b"/a\0b"[..]]), Err(UnixHeaderError::Nul));
/// assert!(matches!(unix_socket_path([&b"docker.sock"[..]]), Err(UnixHeaderError::Relative(_))));
/// ```
pub fn unix_socket_path<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<PathBuf, UnixHeaderError> {
    let mut values = values.into_iter();
    let value = match (values.next(), values.next()) {
        (Some(v), None) => v,
        (None, _) => return Err(UnixHeaderError::Missing),
        (Some(_), Some(_)) => return Err(UnixHeaderError::Repeated),
    };
    let text = std::str::from_utf8(value).map_err(|_| UnixHeaderError::NotUtf8)?;
    let text = text.trim_matches([' ', '\t']);
    if text.contains('\0') {
        return Err(UnixHeaderError::Nul);
    }
    if text.len() > MAX_UNIX_SOCKET_PATH {
        return Err(UnixHeaderError::TooLong);
    }
    let path = PathBuf::from(text);
    if !path.is_absolute() {
        return Err(UnixHeaderError::Relative(path));
    }
    Ok(path)
}

fn failed(message: &str) -> Response<Body> {
    respond::failure(&proxy_core::Failure::new(
        proxy_core::UpstreamFailure::ConnectFailed,
        format!("unix socket proxy failed: {message}"),
    ))
}

/// Serves one request that carries `x-unix-socket`.
pub(crate) async fn forward<G, D, I>(
    shared: Arc<Shared<G, D, I>>,
    peer: SocketAddr,
    permit: Arc<OwnedSemaphorePermit>,
    req: Request<Incoming>,
) -> Response<Body>
where
    G: Gate + 'static,
    D: Dialer<Conn: Stream> + 'static,
    I: Send + Sync + 'static,
{
    let values = req.headers().get_all(HEADER);
    let path = match unix_socket_path(values.iter().map(HeaderValue::as_bytes)) {
        Ok(path) => path,
        // The gate refuses it, after the proxy-state and mode checks, and records it.
        Err(UnixHeaderError::Relative(path)) => path,
        Err(e) => return respond::bad_request(&e.to_string()),
    };
    if req.method() == http::Method::CONNECT {
        return respond::bad_request("x-unix-socket is not supported with CONNECT");
    }
    let mut meta = RequestMeta::new(Protocol::Http, Target::Unix(path))
        .with_method(req.method().as_str())
        .with_client(peer);
    if let Some(why) = cross_origin(&req) {
        meta = meta.with_cross_origin(why);
    }
    meta.method_override = proxy_core::method_override(
        req.headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes())),
    );
    let route = match admit(&*shared.gate, &meta, not_a_tunnel).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if !matches!(route.via, Via::Unix(_)) {
        return failed("the gate did not route the request to a unix socket");
    }
    connect_and_send(&shared, permit, &meta, route, req).await
}

/// Why a request may come from a web page rather than a local client, or `None`: it carries
/// `Origin` or a `Sec-Fetch-*` header (browsers send them, local clients do not), or its Host
/// or authority is not `localhost`, `*.localhost` or a loopback literal (a rebound name is
/// not). A request without either is sent on with `Host: localhost`.
fn cross_origin<B>(req: &Request<B>) -> Option<String> {
    let headers = req.headers();
    if headers.contains_key(header::ORIGIN) {
        return Some("the request carries an Origin header".to_owned());
    }
    if let Some(name) = headers
        .keys()
        .find(|n| n.as_str().starts_with("sec-fetch-"))
    {
        return Some(format!("the request carries a {name} header"));
    }
    let hosts = headers
        .get_all(header::HOST)
        .iter()
        .map(|v| v.to_str().ok())
        .chain(req.uri().authority().map(|a| Some(a.as_str())));
    for host in hosts {
        match host {
            Some(h) if is_local_authority(h) => {}
            Some(h) => {
                return Some(format!(
                    "the Host {h:?} is not localhost, *.localhost or a loopback address"
                ));
            }
            None => return Some("the Host header is not valid text".to_owned()),
        }
    }
    None
}

/// Whether `authority` (`host[:port]`) names `localhost`, a `*.localhost` name or a loopback
/// address (127.0.0.0/8, `::1`), in any spelling `Host` canonicalises.
fn is_local_authority(authority: &str) -> bool {
    let Ok((host, _port)) = proxy_core::split_authority(authority) else {
        return false;
    };
    match Host::parse(host) {
        Ok(h) => match (h.as_name(), h.ip()) {
            (Some(name), _) => name == "localhost" || name.ends_with(".localhost"),
            (None, Some(ip)) => ip.is_loopback(),
            (None, None) => false,
        },
        Err(_) => false,
    }
}

/// Sends the request over the socket `route` reaches, dialled through the dialer.
async fn connect_and_send<G, D, I>(
    shared: &Shared<G, D, I>,
    permit: Arc<OwnedSemaphorePermit>,
    meta: &RequestMeta,
    route: Route,
    req: Request<Incoming>,
) -> Response<Body>
where
    G: Gate,
    D: Dialer<Conn: Stream>,
{
    let idle = shared.limits.idle_timeout;
    // Origin-form target; the header and hop-by-hop headers removed; a Host kept or set.
    let (mut parts, body) = req.into_parts();
    let authority = parts.uri.authority().map(|a| a.as_str().to_owned());
    let target = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    parts.uri = match target.parse::<Uri>() {
        Ok(u) => u,
        Err(_) => return respond::bad_request("bad request target"),
    };
    parts.headers.remove(HEADER);
    strip_hop_by_hop(&mut parts.headers);
    if !parts.headers.contains_key(header::HOST) {
        let host = authority.unwrap_or_else(|| "localhost".to_owned());
        if let Ok(v) = HeaderValue::from_str(&host) {
            parts.headers.insert(header::HOST, v);
        }
    }
    parts.extensions = http::Extensions::new();
    let stats = shared.limits.stats.clone();
    // The response-head timeout counts from the request's last progress (progress.rs).
    let progress = std::sync::Arc::new(crate::progress::Progress::new());
    let outgoing = Request::from_parts(
        parts,
        crate::count::Counted::new(body, stats.clone(), crate::count::Direction::Up)
            .with_progress(progress.clone()),
    );

    // A failure is answered 502 and recorded by the gate, once.
    let fail = |message: String| {
        let f = proxy_core::Failure::new(
            proxy_core::UpstreamFailure::ConnectFailed,
            format!("unix socket proxy failed: {message}"),
        );
        shared.gate.failed(meta, &route, &f);
        respond::failure(&f)
    };
    // Through the descriptor the gate checked: the socket judged is the socket connected.
    let stream = match tokio::time::timeout(idle, shared.dialer.dial(&route)).await {
        Ok(Ok(s)) => s,
        Ok(Err(f)) => return fail(f.message),
        Err(_) => {
            let path = match &route.via {
                Via::Unix(socket) => socket.path().display().to_string(),
                _ => String::new(),
            };
            return fail(format!("could not connect to {path} in time"));
        }
    };
    // Closed when no byte crossed it for the idle timeout (a body that stalls), or when a
    // policy change no longer allows the socket's entry (the gate's lease).
    let (stream, watch) = crate::idle::watch(stream);
    let handle = watch.handle();
    let lease = shared.gate.hold(meta, &route);
    let (mut sender, mut connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
            Ok(x) => x,
            Err(e) => return fail(e.to_string()),
        };
    shared.spawn(async move {
        let _permit = permit;
        tokio::select! {
            biased;
            // Through a reference: moved into the `select!`, it would be held twice.
            ended = &mut connection => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "unix socket connection ended with an error");
                }
            }
            // Marked before the connection drops: the exchange it cuts is then no failure.
            () = async { lease.revoked().await; watch.revoked() } => {
                tracing::debug!("unix socket connection closed: the policy no longer allows it");
            }
            () = async { watch.silent(idle).await; watch.closed_by_us() } => {
                tracing::debug!("unix socket connection closed: idle");
            }
        }
    });
    let response = match crate::progress::head_within(
        idle,
        &progress,
        std::pin::pin!(sender.send_request(outgoing)),
    )
    .await
    {
        Some(Ok(r)) => r,
        // The policy revoked it (its own event says so): answered, but not recorded as a
        // failure of the socket's.
        Some(Err(_)) if handle.revoked() => {
            return respond::failure(&proxy_core::Failure::new(
                proxy_core::UpstreamFailure::UpstreamError,
                "the exchange with the unix socket was closed: the policy no longer allows it",
            ));
        }
        Some(Err(e)) => return fail(e.to_string()),
        None => {
            return fail(format!(
                "no response head within {} s of the request's last byte",
                idle.as_secs()
            ));
        }
    };
    drop(route);
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(
        parts,
        crate::count::Counted::new(body, stats, crate::count::Direction::Down).boxed(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::get(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap_or_default()
    }

    #[test]
    fn the_header_names_one_absolute_bounded_path_or_is_refused() {
        let one = |v: &[u8]| unix_socket_path([v]);
        let path = |p: &str| Ok(PathBuf::from(p));
        assert_eq!(one(b"/run/docker.sock"), path("/run/docker.sock"));
        assert_eq!(one(b" \t/run/a b.sock\t "), path("/run/a b.sock"));
        assert_eq!(one("/run/ü/s".as_bytes()), path("/run/ü/s"));
        assert_eq!(one(b"/a/../b"), path("/a/../b"));
        assert_eq!(unix_socket_path([]), Err(UnixHeaderError::Missing));
        assert_eq!(
            unix_socket_path([&b"/a"[..], b"/a"]),
            Err(UnixHeaderError::Repeated)
        );
        assert_eq!(one(b"/run/\xff.sock"), Err(UnixHeaderError::NotUtf8));
        assert_eq!(one(b"/run/a\0.sock"), Err(UnixHeaderError::Nul));
        for relative in ["docker.sock", "", "  ", "./a", "~/a"] {
            assert_eq!(
                one(relative.as_bytes()),
                Err(UnixHeaderError::Relative(PathBuf::from(relative.trim()))),
                "{relative:?}"
            );
        }
        let longest = format!("/{}", "a".repeat(MAX_UNIX_SOCKET_PATH - 1));
        assert_eq!(one(longest.as_bytes()), path(&longest));
        let longer = format!("{longest}a");
        assert_eq!(one(longer.as_bytes()), Err(UnixHeaderError::TooLong));
        // The 400's message says what is wrong.
        assert_eq!(
            UnixHeaderError::Repeated.to_string(),
            "more than one x-unix-socket header"
        );
    }

    #[test]
    fn local_hosts_pass_and_everything_else_is_cross_origin() {
        for host in [
            "localhost",
            "LOCALHOST.:2375",
            "api.moby.localhost",
            "127.0.0.1",
            "127.9.8.7:8080",
            "127.1",
            "[::1]",
            "[::1]:2375",
            "[::ffff:127.0.0.1]:80",
        ] {
            assert_eq!(
                cross_origin(&request("/", &[("host", host)])),
                None,
                "{host}"
            );
        }
        assert_eq!(cross_origin(&request("/", &[])), None);
        assert_eq!(
            cross_origin(&request("http://api.moby.localhost/v1.41/info", &[])),
            None
        );
        for host in [
            "rebind.attacker.example:8080",
            "localhost.attacker.example",
            "notlocalhost",
            "10.0.0.1",
            "0.0.0.0",
            "[::]",
            "[::2]",
            "192.168.1.1:2375",
            "local host",
            "localhost:0",
            "",
        ] {
            let why = cross_origin(&request("/", &[("host", host)]));
            assert!(
                why.is_some_and(|w| w.contains("is not localhost")),
                "{host}"
            );
        }
        // An absolute URI with a foreign authority, even under a local Host header.
        assert!(cross_origin(&request("http://evil.example/", &[("host", "localhost")])).is_some());
        assert!(
            cross_origin(&request(
                "/",
                &[("host", "localhost"), ("host", "evil.example")]
            ))
            .is_some()
        );
    }

    #[test]
    fn origin_and_sec_fetch_headers_are_cross_origin_whatever_the_host() {
        for (name, value) in [
            ("origin", "http://rebind.attacker.example:8080"),
            ("origin", "null"),
            ("sec-fetch-mode", "no-cors"),
            ("sec-fetch-site", "same-origin"),
            ("Sec-Fetch-Dest", "empty"),
        ] {
            let why = cross_origin(&request("/", &[("host", "localhost"), (name, value)]));
            assert!(
                why.as_deref()
                    .is_some_and(|w| w.to_ascii_lowercase().contains(&name.to_ascii_lowercase())),
                "{name}: {why:?}"
            );
        }
    }
}
