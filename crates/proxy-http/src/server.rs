//! The accept loop and per-connection serving.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Method, Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use proxy_core::{Dialer, Gate, Interceptor, ProxyCredential};
use proxy_io::{Limits, Stream};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, watch};

use crate::forward;
use crate::reset::{Abort, ClientStream, Resettable};
use crate::respond::Body;
use crate::shared::{Broker, Shared, TunnelClient};

/// Serves HTTP proxy connections from `listener` until `shutdown` completes, then stops
/// accepting, asks open connections to finish their current exchange, and waits for them and
/// their tunnels. The caller bounds that wait (netproxy: 10 s).
///
/// Past `limits.max_connections`, new connections are not accepted until one closes: they wait
/// in the kernel's accept backlog (and are refused by the kernel when it is full).
///
/// A `CONNECT` the gate routes with `intercept` goes to `interceptor` once the upstream is
/// connected and the `200` sent; when the interceptor declines it, the `CONNECT` is refused
/// (never tunnelled as it is). Other requests with such a route are refused `mitm_required`.
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
    I: Interceptor<TunnelClient, D::Conn> + 'static,
    S: Future<Output = ()>,
{
    run_brokered(listener, gate, dialer, interceptor, limits, None, shutdown).await;
}

/// [`run`] with the credential broker: a plain HTTP request carrying one of the vault's dummies
/// is refused `credential_not_bound`, or, with `allow_plaintext` and the grant bound to its
/// destination, forwarded with the real value in the dummy's place (docs/credentials.md).
pub async fn run_brokered<G, D, I, S>(
    listener: TcpListener,
    gate: Arc<G>,
    dialer: Arc<D>,
    interceptor: Arc<I>,
    limits: Limits,
    broker: Option<Broker>,
    shutdown: S,
) where
    G: Gate + 'static,
    D: Dialer<Conn: Stream> + 'static,
    I: Interceptor<TunnelClient, D::Conn> + 'static,
    S: Future<Output = ()>,
{
    let max_connections = limits.max_connections;
    let shared = Arc::new(Shared {
        gate,
        dialer,
        interceptor,
        limits,
        broker,
        tracker: Arc::default(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let tracker = shared.tracker.clone();
    proxy_io::accept_loop(
        listener,
        max_connections,
        &tracker,
        shutdown,
        |stream: TcpStream, peer, permit| {
            let _ = stream.set_nodelay(true);
            serve_connection(shared.clone(), stream, peer, permit, stop_rx.clone())
        },
    )
    .await;
    let _ = stop_tx.send(true);
    shared.tracker.idle().await;
}

/// Serves one client connection that was accepted elsewhere, over any byte stream, exactly as
/// [`run`] serves each connection it accepts (the header timeout, keep-alive, the gate, the
/// dialer, tunnels and websocket upgrades), and returns once the connection and every task it
/// started (tunnels, upstream connections) have ended. The fuzz harness drives it over an
/// in-memory stream; [`Limits::max_connections`] does not apply to a single connection.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::sync::Arc;
/// use proxy_core::NoInterception;
/// use proxy_http::{Limits, serve_stream};
/// use proxy_test_support::{RecordingDialer, StubGate};
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// let (mut client, server) = tokio::io::duplex(4096);
/// client.write_all(b"GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n").await.unwrap();
/// let (gate, dialer) = (Arc::new(StubGate::new()), Arc::new(RecordingDialer::new()));
/// let peer = "127.0.0.1:40000".parse().unwrap();
/// serve_stream(server, peer, gate, dialer, Arc::new(NoInterception), Limits::default()).await;
/// let mut back = String::new();
/// client.read_to_string(&mut back).await.unwrap();
/// assert!(back.starts_with("HTTP/1.1 403 Blocked by netproxy (not_allowed)"));
/// # }
/// ```
pub async fn serve_stream<G, D, I, S>(
    stream: S,
    peer: SocketAddr,
    gate: Arc<G>,
    dialer: Arc<D>,
    interceptor: Arc<I>,
    limits: Limits,
) where
    G: Gate + 'static,
    D: Dialer<Conn: Stream> + 'static,
    I: Interceptor<TunnelClient, D::Conn> + 'static,
    S: ClientStream,
{
    let shared = Arc::new(Shared {
        gate,
        dialer,
        interceptor,
        limits,
        broker: None,
        tracker: Arc::default(),
    });
    // The connection's slot (a listener's semaphore has many; this one has one).
    let Ok(permit) = Arc::new(tokio::sync::Semaphore::new(1)).try_acquire_owned() else {
        return;
    };
    // Never sent: the connection is not asked to finish early (but the sender must live, or
    // the connection would read its end as a shutdown).
    let (_stop_tx, stop_rx) = watch::channel(false);
    serve_connection(shared.clone(), stream, peer, permit, stop_rx).await;
    shared.tracker.idle().await;
}

async fn serve_connection<G, D, I, S>(
    shared: Arc<Shared<G, D, I>>,
    stream: S,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    mut stop: watch::Receiver<bool>,
) where
    G: Gate + 'static,
    D: Dialer<Conn: Stream> + 'static,
    I: Interceptor<TunnelClient, D::Conn> + 'static,
    S: ClientStream,
{
    let _open = shared.limits.stats.connection();
    let permit = Arc::new(permit);
    let limits = &shared.limits;
    let svc_shared = shared.clone();
    // This client connection's upstream connection, reused from one request to the next.
    let upstream: forward::UpstreamSlot = Arc::default();
    // Notified when a response breaks off after its head: the connection is then reset.
    let close = Arc::new(Abort::default());
    let svc_close = close.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let shared = svc_shared.clone();
        let permit = permit.clone();
        let upstream = upstream.clone();
        let close = svc_close.clone();
        async move {
            Ok::<Response<Body>, Infallible>(
                handle(shared, peer, permit, upstream, close, req).await,
            )
        }
    });
    let stream = Resettable::new(stream, &close);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .half_close(false)
        .keep_alive(true);
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(client = %peer, error = %e, "connection ended with an error");
            }
        }
        () = close.aborted() => {
            // Dropped below with a reset: the client never reads a clean end as a whole body.
            tracing::debug!(client = %peer, "connection reset: its response broke off");
        }
        () = async { let _ = stop.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

async fn handle<G, D, I>(
    shared: Arc<Shared<G, D, I>>,
    peer: SocketAddr,
    permit: Arc<OwnedSemaphorePermit>,
    upstream: forward::UpstreamSlot,
    close: Arc<Abort>,
    req: Request<Incoming>,
) -> Response<Body>
where
    G: Gate + 'static,
    D: Dialer<Conn: Stream> + 'static,
    I: Interceptor<TunnelClient, D::Conn> + 'static,
{
    if let Some(resp) = check_head_size(&req, shared.limits.max_header_bytes) {
        return resp;
    }
    if let Some(cred) = &shared.limits.proxy_auth
        && !proxy_authorized(
            req.headers()
                .get_all(hyper::header::PROXY_AUTHORIZATION)
                .iter()
                .map(http::HeaderValue::as_bytes),
            cred,
        )
    {
        tracing::debug!(client = %peer, "request without the proxy credential");
        return crate::respond::proxy_auth_required();
    }
    if req.headers().contains_key(crate::unix::HEADER) {
        return crate::unix::forward(shared, peer, permit, req).await;
    }
    if req.method() == Method::CONNECT {
        forward::connect(shared, peer, permit, req).await
    } else {
        forward::absolute(shared, peer, permit, upstream, close, req).await
    }
}

/// Whether one of `values` (a request's `Proxy-Authorization` header values, in any number)
/// carries `cred`: the `Basic` scheme (any case), then the base64 (standard alphabet, with its
/// padding) of the user, a colon and the password, compared with `cred` in constant time
/// (RFC 7617). Anything else (another scheme, bad base64, bytes that are not UTF-8) is simply
/// not the credential; nothing panics. A request without it is answered `407`
/// (docs/run.md, `--proxy-auth`).
///
/// ```
/// use proxy_core::ProxyCredential;
/// let cred = ProxyCredential::new("user", "secret");
/// // base64("user:secret")
/// assert!(proxy_http::proxy_authorized([&b"Basic dXNlcjpzZWNyZXQ="[..]], &cred));
/// assert!(!proxy_http::proxy_authorized([&b"Bearer dXNlcjpzZWNyZXQ="[..]], &cred));
/// assert!(!proxy_http::proxy_authorized([&b"Basic \xff"[..]], &cred));
/// ```
pub fn proxy_authorized<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
    cred: &ProxyCredential,
) -> bool {
    use base64::Engine;
    values.into_iter().any(|v| {
        let Some((scheme, token)) = v.split_at_checked(6) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(b"basic ") {
            return false;
        }
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(token.trim_ascii())
        else {
            return false;
        };
        // `user:password`: without the colon, nothing (not the user with an empty password).
        let Some(colon) = decoded.iter().position(|b| *b == b':') else {
            return false;
        };
        cred.matches(&decoded[..colon], &decoded[colon + 1..])
    })
}

/// Refuses a request head larger than `max` bytes (request line included): 414 when the
/// target alone is too long, 431 otherwise. hyper's own buffer limit cannot go below 8192
/// bytes and is not an exact bound, so the limit is enforced here on the parsed head.
fn check_head_size(req: &Request<Incoming>, max: usize) -> Option<Response<Body>> {
    let target = req.uri().to_string().len();
    // "METHOD SP target SP HTTP/1.1 CRLF"
    let line = req.method().as_str().len() + target + 12;
    let headers: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if line + headers + 2 <= max {
        return None;
    }
    let (status, reason) = if line > max {
        (hyper::StatusCode::URI_TOO_LONG, "uri_too_long")
    } else {
        (
            hyper::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "header_too_large",
        )
    };
    Some(crate::respond::error(
        status,
        reason,
        &format!("the request head exceeds {max} bytes"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_basic_with_exactly_the_credential_passes() {
        let cred = ProxyCredential::new("netproxy", "s3cret");
        let check = |values: &[&[u8]]| proxy_authorized(values.iter().copied(), &cred);
        // base64("netproxy:s3cret")
        assert!(check(&[b"Basic bmV0cHJveHk6czNjcmV0"]));
        assert!(check(&[b"basic bmV0cHJveHk6czNjcmV0"]));
        assert!(check(&[b"BASIC   bmV0cHJveHk6czNjcmV0 "]));
        // One of several values.
        assert!(check(&[b"Bearer x", b"Basic bmV0cHJveHk6czNjcmV0"]));
        for refused in [
            &b""[..],
            b"Basic",
            b"Basic ",
            b"Bearer bmV0cHJveHk6czNjcmV0",
            b"BasicbmV0cHJveHk6czNjcmV0",
            // With stray padding, or a changed byte.
            b"Basic bmV0cHJveHk6czNjcmV0=",
            b"Basic bmV0cHJveHk6czNjcmV1",
            // netproxy:s3creT, netproxy, netproxy:, :s3cret
            b"Basic bmV0cHJveHk6czNjcmVU",
            b"Basic bmV0cHJveHk=",
            b"Basic bmV0cHJveHk6",
            b"Basic OnMzY3JldA==",
            b"Basic \xff\xfe",
        ] {
            assert!(!check(&[refused]), "{refused:?}");
        }
        assert!(!check(&[]));
    }
}
