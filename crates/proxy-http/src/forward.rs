//! The two request paths: `CONNECT` tunnels and absolute-form forwarding.

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use proxy_broker::{Destination, Scheme};
use proxy_core::BrokeredCredential;
use proxy_core::{
    Admission, Decision, Dialer, Failure, Gate, Host, Intercepted, Interceptor, Lease, Protocol,
    Reason, RequestMeta, Route, Target, UpstreamFailure, Via, method_override, split_authority,
};
use proxy_io::{Stream, tunnel_until};
use tokio::sync::OwnedSemaphorePermit;

use crate::count::{Counted, Direction};
use crate::cut::{self, Cut, Watched};
use crate::progress::{Progress, head_within};
use crate::reset::Resettable;
use crate::respond::{self, Body};
use crate::shared::{Shared, TunnelClient};

/// Hop-by-hop headers (RFC 9110 §7.6.1) and the proxy's own; never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Admits `meta`, or answers the refusal or failure. A route to intercept is kept only when
/// `intercept` accepts it; otherwise its refusal is answered: such a route never becomes a plain
/// tunnel or a plain request.
pub(crate) async fn admit<G: Gate>(
    gate: &G,
    meta: &RequestMeta,
    intercept: impl FnOnce(&Route) -> Result<(), Decision>,
) -> Result<Route, Response<Body>> {
    match gate.admit(meta).await {
        Admission::Allow(route) if route.intercept => match intercept(&route) {
            Ok(()) => Ok(route),
            Err(d) => Err(respond::blocked(&d, meta)),
        },
        Admission::Allow(route) => Ok(route),
        Admission::Deny(d) => Err(respond::blocked(&d, meta)),
        Admission::Fail(f) => Err(respond::failure(&f)),
    }
}

/// For a request that is not a tunnel: there is nothing to intercept, so a route that needs
/// interception is refused `mitm_required`.
pub(crate) fn not_a_tunnel(_route: &Route) -> Result<(), Decision> {
    Err(Decision::deny(Reason::MitmRequired))
}

/// `CONNECT host:port`: admit, dial, answer 200 only once the upstream is connected, then
/// tunnel, or hand the tunnel to the interceptor when the gate's route says so.
pub(crate) async fn connect<G, D, I>(
    shared: Arc<Shared<G, D, I>>,
    peer: SocketAddr,
    permit: Arc<OwnedSemaphorePermit>,
    req: Request<Incoming>,
) -> Response<Body>
where
    G: Gate + 'static,
    D: Dialer<Conn: Stream> + 'static,
    I: Interceptor<TunnelClient, D::Conn> + 'static,
{
    let Some(authority) = req.uri().authority().cloned() else {
        return respond::bad_request("CONNECT needs an authority (host:port)");
    };
    if authority.as_str().contains('@') {
        return respond::bad_request("CONNECT needs an authority (host:port) without credentials");
    }
    let meta = match meta_for(Protocol::HttpsConnect, &authority, 443, "CONNECT", peer) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let interceptor = &*shared.interceptor;
    let route = match admit(&*shared.gate, &meta, |r| interceptor.accepts(&meta, r)).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let upstream = match shared.dialer.dial(&route).await {
        Ok(u) => u,
        Err(f) => {
            // Recorded by the gate as a failure; the log has it at debug only (`run` tells it
            // in its notices and summary).
            tracing::debug!(client = %peer, target = %meta.target, error = %f, "CONNECT upstream failed");
            shared.gate.failed(&meta, &route, &f);
            return respond::failure(&f);
        }
    };
    let idle = shared.limits.idle_timeout;
    // Closed when a narrower policy no longer allows the target.
    let lease = shared.gate.hold(&meta, &route);
    // Take the upgrade out of the request now, so the tunnel task does not carry the request.
    let on_upgrade = hyper::upgrade::on(req);
    let open = shared.limits.stats.tunnel();
    if route.intercept {
        let interceptor = shared.interceptor.clone();
        shared.spawn(async move {
            let _permit = permit;
            let client = match on_upgrade.await {
                Ok(u) => TokioIo::new(u),
                Err(e) => {
                    tracing::debug!(client = %peer, error = %e, "CONNECT upgrade failed");
                    return;
                }
            };
            let tunnel = Intercepted {
                client,
                upstream,
                meta,
                route,
                lease,
            };
            proxy_io::intercept(&*interceptor, tunnel, open).await;
        });
        return Response::new(respond::empty());
    }
    // Kept only to judge the ClientHello (`verify_sni`).
    let verify = route.verify_sni.then(|| (shared.gate.clone(), meta, route));
    let tracker = shared.tracker.clone();
    shared.spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(client = %peer, error = %e, "CONNECT upgrade failed");
                return;
            }
        };
        // Between two TCP sockets (always, in netproxy) the tunnel gets a task of its own, whose
        // state is only the tunnel: an idle tunnel then keeps nothing of the upgrade.
        let verify = verify.as_ref().map(|(g, m, r)| (&**g, m, r, &lease));
        let _permit = match ends(upgraded, upstream, verify).await {
            Ends::Tcp(client, upstream) => {
                tracker.spawn(async move {
                    let _permit = permit;
                    let (up, down) =
                        proxy_io::tunnel_tcp_until(client, upstream, idle, || lease.revoked())
                            .await;
                    open.closed(up, down);
                    tracing::debug!(client = %peer, up, down, "tunnel closed");
                });
                return;
            }
            Ends::Client(client, upstream) => {
                let (up, down) = tunnel_until(client, upstream, idle, || lease.revoked()).await;
                open.closed(up, down);
                tracing::debug!(client = %peer, up, down, "tunnel closed");
                permit
            }
            Ends::Upgraded(upgraded, upstream) => {
                let (up, down) =
                    tunnel_until(TokioIo::new(upgraded), upstream, idle, || lease.revoked()).await;
                open.closed(up, down);
                tracing::debug!(client = %peer, up, down, "tunnel closed");
                permit
            }
            Ends::Failed => permit,
        };
    });
    Response::new(respond::empty())
}

/// Builds the request metadata from an authority, or the response that refuses it.
fn meta_for(
    protocol: Protocol,
    authority: &Authority,
    default_port: u16,
    method: &str,
    peer: SocketAddr,
) -> Result<RequestMeta, Response<Body>> {
    let (host, port) = split_authority(authority.as_str())
        .map_err(|e| respond::bad_request(&format!("bad authority {authority}: {e}")))?;
    // No host at all (`CONNECT :443`, `http://:8080/`) is a bad request like any other request
    // without a host, not a host the policy refuses.
    if host.is_empty() {
        return Err(respond::bad_request(&format!(
            "bad authority {authority}: no host"
        )));
    }
    let port = port.unwrap_or(default_port);
    let Ok(host) = Host::parse(host) else {
        return Err(respond::invalid_host(host, port, protocol));
    };
    Ok(RequestMeta::new(protocol, Target::net(host, port))
        .with_method(method)
        .with_client(peer))
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let has_token = |name: HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has_token(header::CONNECTION, "upgrade") && has_token(header::UPGRADE, "websocket")
}

/// Removes hop-by-hop headers and the headers named in `Connection`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// An absolute-form request: check it, admit it, forward it with its body streamed.
///
/// `close` is the client connection's: notified when the upstream stalls mid-body, so that the
/// connection is closed.
pub(crate) async fn absolute<G, D, I>(
    shared: Arc<Shared<G, D, I>>,
    peer: SocketAddr,
    permit: Arc<OwnedSemaphorePermit>,
    upstream: UpstreamSlot,
    close: Arc<crate::reset::Abort>,
    mut req: Request<Incoming>,
) -> Response<Body>
where
    G: Gate + 'static,
    D: Dialer<Conn: Stream> + 'static,
    I: Send + Sync + 'static,
{
    let uri = req.uri().clone();
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority().cloned()) else {
        return respond::bad_request(
            "not a proxy request: send an absolute URI (http://host/path), or CONNECT for https",
        );
    };
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" | "ws" => 80,
        "https" | "wss" => {
            return respond::bad_request(
                "https:// requests must use CONNECT (the proxy does not originate TLS)",
            );
        }
        _ => return respond::bad_request(&format!("unsupported scheme {scheme}")),
    };
    if authority.as_str().contains('@') {
        return respond::bad_request("credentials in the request URI are not forwarded");
    }
    let websocket = is_websocket_upgrade(req.headers());
    let mut meta = match meta_for(
        Protocol::Http,
        &authority,
        default_port,
        req.method().as_str(),
        peer,
    ) {
        Ok(m) => m,
        Err(r) => return r,
    };
    if websocket {
        meta = meta.with_upgrade();
    }
    meta.method_override = method_override(
        req.headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes())),
    );
    if let Err(msg) = check_host_header(req.headers(), &meta, default_port) {
        return respond::bad_request(msg);
    }
    // A brokered dummy: the gate refuses it (in its one event) unless plaintext injection is
    // allowed and its grant is bound here.
    let broker = shared.broker.as_ref().zip(meta.target.host().cloned());
    if let Some((b, host)) = &broker {
        let dest = Destination::new(Scheme::Http, host, meta.target.port(), uri.path());
        match b
            .vault
            .check_request(&dest, req.headers(), b.allow_plaintext)
        {
            Ok(done) => {
                if let Some(a) = done.audit() {
                    meta = meta.with_credential(BrokeredCredential::bound(a.grant));
                }
            }
            Err(refused) => {
                meta = meta.with_credential(BrokeredCredential::refused(
                    refused.grant.clone(),
                    refused.to_string(),
                ));
            }
        }
    }
    let route = match admit(&*shared.gate, &meta, not_a_tunnel).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    // The client's upgrade, taken before the request is forwarded.
    let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));

    // Rewrite: origin-form target, hop-by-hop headers removed, Host kept (or set).
    let path = uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // A gate that allowed an unbound dummy is not followed.
    if let Some(refused) = meta.credential_refusal() {
        return respond::blocked(&refused, &meta);
    }
    if let Some((b, host)) = &broker {
        let dest = Destination::new(Scheme::Http, host, meta.target.port(), uri.path());
        if let Err(refused) = b.vault.inject(&dest, &mut parts.headers, b.allow_plaintext) {
            let refused =
                Decision::deny(Reason::CredentialNotBound).with_detail(refused.to_string());
            return respond::blocked(&refused, &meta);
        }
    }
    if websocket {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts
            .headers
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    if !parts.headers.contains_key(header::HOST)
        && let Ok(v) = HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(header::HOST, v);
    }
    // Through an upstream proxy a plain request stays in absolute form; otherwise it becomes
    // origin-form.
    let absolute_upstream = matches!(route.via, Via::UpstreamProxy { connect: false, .. });
    parts.uri = if absolute_upstream {
        uri.clone()
    } else {
        match path.parse::<Uri>() {
            Ok(u) => u,
            Err(_) => return respond::bad_request("bad request target"),
        }
    };
    parts.extensions = http::Extensions::new();
    let stats = shared.limits.stats.clone();
    // The response-head timeout counts from the request's last progress (progress.rs).
    let progress = Arc::new(Progress::new());
    let outgoing = Request::from_parts(
        parts,
        Counted::new(body, stats.clone(), Direction::Up).with_progress(progress.clone()),
    );

    let idle = shared.limits.idle_timeout;
    // Reuse this client connection's upstream connection when the gate routed this request to
    // the same checked addresses; otherwise dial.
    let cached = if websocket {
        None
    } else {
        upstream
            .lock()
            .await
            .take()
            .filter(|c| c.via == route.via && !c.sender.is_closed())
    };
    let reused = cached.is_some();
    // A failure is answered 502 (504 for a timeout) and recorded by the gate, once.
    let failed = |f: Failure| {
        shared.gate.failed(&meta, &route, &f);
        respond::failure(&f)
    };
    let (mut sender, mut handle) = match cached {
        Some(c) => (c.sender, c.handle),
        None => match open_upstream(&shared, &meta, &route, &permit).await {
            Ok(s) => s,
            Err(f) => return failed(f),
        },
    };
    let first = head_within(idle, &progress, pin!(sender.try_send_request(outgoing))).await;
    let result = match first {
        // A reused connection the upstream had closed: the request was not sent; dial anew.
        Some(Err(mut e)) if reused && e.message().is_some() => match e.take_message() {
            Some(req) => match open_upstream(&shared, &meta, &route, &permit).await {
                Ok(s) => {
                    (sender, handle) = s;
                    head_within(idle, &progress, pin!(sender.try_send_request(req))).await
                }
                Err(f) => return failed(f),
            },
            None => Some(Err(e)),
        },
        other => other,
    };
    let mut response = match result {
        None => {
            return failed(Failure::new(
                UpstreamFailure::UpstreamTimeout,
                format!(
                    "{} sent no response head within {} s of the request's last byte",
                    meta.target,
                    idle.as_secs()
                ),
            ));
        }
        Some(Err(e)) => {
            let f = Failure::new(
                UpstreamFailure::UpstreamError,
                format!(
                    "the exchange with {} broke: {}",
                    meta.target,
                    e.into_error()
                ),
            );
            if handle.revoked() {
                // The policy revoked the connection (its own event says so): answered, but
                // nothing is blamed on the upstream.
                return respond::failure(&f);
            }
            if handle.closed_by_us() {
                // Cut idle before its head: the upstream stopped reading the request while
                // the client kept sending it (hyper buffered the body's frames).
                return failed(Failure::new(
                    UpstreamFailure::UpstreamTimeout,
                    format!(
                        "{} stopped reading the request: no byte for {} s",
                        meta.target,
                        (idle * 2).as_secs()
                    ),
                ));
            }
            return failed(f);
        }
        Some(Ok(r)) => r,
    };
    if !websocket {
        *upstream.lock().await = Some(Upstream {
            via: route.via.clone(),
            sender,
            handle: handle.clone(),
        });
    }

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return failed(Failure::new(
                UpstreamFailure::UpstreamError,
                format!("{} switched protocols without being asked", meta.target),
            ));
        };
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        let open = shared.limits.stats.tunnel();
        let lease = shared.gate.hold(&meta, &route);
        shared.spawn(async move {
            let _permit = permit;
            match tokio::join!(client_upgrade, upstream_upgrade) {
                (Ok(c), Ok(u)) => {
                    let (up, down) =
                        tunnel_until(TokioIo::new(c), TokioIo::new(u), idle, || lease.revoked())
                            .await;
                    open.closed(up, down);
                }
                (c, u) => tracing::debug!(
                    client_ok = c.is_ok(),
                    upstream_ok = u.is_ok(),
                    "websocket upgrade failed"
                ),
            }
        });
        let (mut parts, _) = response.into_parts();
        let keep = (
            parts.headers.get(header::CONNECTION).cloned(),
            parts.headers.get(header::UPGRADE).cloned(),
        );
        strip_hop_by_hop(&mut parts.headers);
        if let (Some(c), Some(u)) = keep {
            parts.headers.insert(header::CONNECTION, c);
            parts.headers.insert(header::UPGRADE, u);
        }
        return Response::from_parts(parts, respond::empty());
    }
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // A body the upstream cuts short or stalls is a failure of the answer, recorded once; the
    // client's connection is closed before the body's end.
    let gate = shared.gate.clone();
    let body = Watched::new(body, idle, close, move |cut: Cut<'_>| {
        if handle.closed_by_us() {
            // netproxy closed the connection (a revocation, which has its own event, or idle:
            // a client that stopped reading): the client's connection is reset, nothing is
            // blamed on the upstream.
            tracing::debug!(client = %peer, target = %meta.target, "response cut by netproxy");
            return;
        }
        let (kind, why) = match cut {
            Cut::Broke(e) => (
                UpstreamFailure::UpstreamError,
                format!("broke off: {}", cut::why(e)),
            ),
            Cut::Stalled(idle) => (
                UpstreamFailure::UpstreamTimeout,
                format!("stalled: no byte for {} s", idle.as_secs()),
            ),
        };
        tracing::debug!(client = %peer, target = %meta.target, error = %why, "response cut short");
        let message = format!("the response from {} {why}", meta.target);
        gate.failed(&meta, &route, &Failure::new(kind, message));
    });
    Response::from_parts(parts, Counted::new(body, stats, Direction::Down).boxed())
}

/// An upstream HTTP/1.1 connection kept for the next request of the same client connection.
pub(crate) struct Upstream {
    via: Via,
    sender: SendRequest<Counted<Incoming>>,
    handle: crate::idle::Handle,
}

/// The upstream connection a client connection may reuse.
pub(crate) type UpstreamSlot = Arc<tokio::sync::Mutex<Option<Upstream>>>;

/// Dials the route and starts an HTTP/1.1 client connection on it.
async fn open_upstream<G, D, I>(
    shared: &Shared<G, D, I>,
    meta: &RequestMeta,
    route: &Route,
    permit: &Arc<OwnedSemaphorePermit>,
) -> Result<(SendRequest<Counted<Incoming>>, crate::idle::Handle), Failure>
where
    G: Gate + 'static,
    D: Dialer<Conn: Stream> + 'static,
{
    let conn = shared.dialer.dial(route).await?;
    let (conn, watch) = crate::idle::watch(conn);
    let handle = watch.handle();
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(conn))
        .await
        .map_err(|e| {
            Failure::new(
                UpstreamFailure::UpstreamError,
                format!("the exchange with {} broke: {e}", meta.target),
            )
        })?;
    let conn_permit = permit.clone();
    // A kept-alive connection is closed when a narrower policy no longer allows its target,
    // and any connection when no byte crossed it for the idle timeout (a body that stalls).
    let lease = shared.gate.hold(meta, route);
    let idle = shared.limits.idle_timeout;
    // Polled through a reference: a future the task captured and then moved into the `select!`
    // would be held twice (docs/benchmarks.md).
    let mut connection = connection.with_upgrades();
    shared.spawn(async move {
        let _permit = conn_permit;
        tokio::select! {
            biased;
            ended = &mut connection => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "upstream connection ended with an error");
                }
            }
            // Marked before the connection drops: the body it cuts is then no upstream failure.
            () = async { lease.revoked().await; watch.revoked() } => {
                tracing::debug!("upstream connection closed: the policy no longer allows it");
            }
            () = async { watch.silent(idle).await; watch.closed_by_us() } => {
                tracing::debug!("upstream connection closed: idle");
            }
        }
    });
    Ok((sender, handle))
}

/// What an upgraded `CONNECT` connects.
enum Ends<U> {
    /// Two TCP sockets (always, in netproxy).
    Tcp(tokio::net::TcpStream, tokio::net::TcpStream),
    /// A TCP client and another kind of upstream.
    Client(tokio::net::TcpStream, U),
    /// hyper's upgraded stream (not a plain TCP stream) and the upstream.
    Upgraded(hyper::upgrade::Upgraded, U),
    /// The bytes hyper had already read could not be sent upstream.
    Failed,
}

/// Takes hyper's wrapper off an upgraded `CONNECT`, sending the bytes hyper had already read
/// upstream first; with `verify` (`verify_sni`), only once the gate has judged the client's
/// ClientHello (a refused tunnel is closed with nothing relayed).
async fn ends<U: Stream, G: Gate>(
    upgraded: hyper::upgrade::Upgraded,
    mut upstream: U,
    verify: Option<(&G, &RequestMeta, &Route, &Lease)>,
) -> Ends<U> {
    let parts = match upgraded.downcast::<TokioIo<Resettable<tokio::net::TcpStream>>>() {
        Ok(parts) => parts,
        Err(upgraded) => {
            let Some((gate, meta, route, lease)) = verify else {
                return Ends::Upgraded(upgraded, upstream);
            };
            let mut client = TokioIo::new(upgraded);
            return match proxy_io::verify_hello(
                gate,
                meta,
                route,
                lease,
                &mut client,
                Vec::new(),
                &mut upstream,
            )
            .await
            {
                Ok(()) => Ends::Upgraded(client.into_inner(), upstream),
                Err(_) => Ends::Failed,
            };
        }
    };
    let Some(mut client) = parts.io.into_inner().into_inner() else {
        return Ends::Failed;
    };
    if let Some((gate, meta, route, lease)) = verify {
        // The bytes hyper read past the CONNECT head are the ClientHello's first.
        let already = parts.read_buf.to_vec();
        if proxy_io::verify_hello(
            gate,
            meta,
            route,
            lease,
            &mut client,
            already,
            &mut upstream,
        )
        .await
        .is_err()
        {
            return Ends::Failed;
        }
    } else if !parts.read_buf.is_empty()
        && tokio::io::AsyncWriteExt::write_all(&mut upstream, &parts.read_buf)
            .await
            .is_err()
    {
        return Ends::Failed;
    }
    match proxy_io::into_tcp(upstream) {
        Ok(tcp) => Ends::Tcp(client, tcp),
        Err(Some(other)) => Ends::Client(client, other),
        Err(None) => Ends::Failed,
    }
}

/// A `Host` header must name the same host and port as the absolute URI.
fn check_host_header(
    headers: &HeaderMap,
    meta: &RequestMeta,
    default_port: u16,
) -> Result<(), &'static str> {
    let mut values = headers.get_all(header::HOST).iter();
    let Some(value) = values.next() else {
        return Ok(());
    };
    if values.next().is_some() {
        return Err("more than one Host header");
    }
    let text = value.to_str().map_err(|_| "invalid Host header")?;
    let (h, p) = split_authority(text).map_err(|_| "invalid Host header")?;
    let host = Host::parse(h).map_err(|_| "invalid Host header")?;
    let port = p.unwrap_or(default_port);
    if Some(&host) != meta.target.host() || port != meta.target.port() {
        return Err("Host header does not match request target");
    }
    Ok(())
}
