//! `x-unix-socket: /abs/path` requests (reference-behavior.md §4.7): the gate judges the path
//! (never the domain policy), and an allowed request is rewritten to origin-form and sent over
//! the socket.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use proxy_core::{Dialer, Gate, Protocol, RequestMeta, Target, Via};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::OwnedSemaphorePermit;

use crate::forward::{admit, strip_hop_by_hop};
use crate::respond::{self, Body};
use crate::server::Shared;

/// The request header naming the socket.
pub(crate) const HEADER: &str = "x-unix-socket";

fn failed(message: &str) -> Response<Body> {
    respond::json_response(
        StatusCode::BAD_GATEWAY,
        &json!({
            "status": "error",
            "reason": "connect_failed",
            "message": format!("unix socket proxy failed: {message}"),
        }),
    )
}

/// Serves one request that carries `x-unix-socket`.
pub(crate) async fn forward<G, D>(
    shared: Arc<Shared<G, D>>,
    peer: SocketAddr,
    permit: Arc<OwnedSemaphorePermit>,
    req: Request<Incoming>,
) -> Response<Body>
where
    G: Gate + 'static,
    D: Dialer + 'static,
    D::Conn: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut values = req.headers().get_all(HEADER).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return respond::bad_request("more than one x-unix-socket header");
    };
    let Ok(path) = value.to_str().map(|s| PathBuf::from(s.trim())) else {
        return respond::bad_request("invalid x-unix-socket header");
    };
    if req.method() == http::Method::CONNECT {
        return respond::bad_request("x-unix-socket is not supported with CONNECT");
    }
    let meta = RequestMeta::new(Protocol::Http, Target::Unix(path))
        .with_method(req.method().as_str())
        .with_client(peer);
    let route = match admit(&*shared.gate, &meta).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let Via::Unix(socket) = route.via else {
        return failed("the gate did not route the request to a unix socket");
    };
    connect_and_send(&shared, permit, socket, req).await
}

#[cfg(unix)]
async fn connect_and_send<G, D>(
    shared: &Shared<G, D>,
    permit: Arc<OwnedSemaphorePermit>,
    socket: PathBuf,
    req: Request<Incoming>,
) -> Response<Body> {
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
    let outgoing = Request::from_parts(
        parts,
        crate::count::Counted::new(body, stats.clone(), crate::count::Direction::Up),
    );

    let stream = match tokio::time::timeout(idle, tokio::net::UnixStream::connect(&socket)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return failed(&format!("{}: {e}", socket.display())),
        Err(_) => return failed(&format!("{}: connect timed out", socket.display())),
    };
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
            Ok(x) => x,
            Err(e) => return failed(&e.to_string()),
        };
    shared.spawn(async move {
        let _permit = permit;
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "unix socket connection ended with an error");
        }
    });
    let response = match tokio::time::timeout(idle, sender.send_request(outgoing)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return failed(&e.to_string()),
        Err(_) => return failed(&format!("no response head within {} s", idle.as_secs())),
    };
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(
        parts,
        crate::count::Counted::new(body, stats, crate::count::Direction::Down).boxed(),
    )
}

#[cfg(not(unix))]
async fn connect_and_send<G, D>(
    _shared: &Shared<G, D>,
    _permit: Arc<OwnedSemaphorePermit>,
    _socket: PathBuf,
    _req: Request<Incoming>,
) -> Response<Body> {
    respond::json_response(
        StatusCode::NOT_IMPLEMENTED,
        &json!({"status": "error", "reason": "unix_socket_unsupported",
                "message": "unix sockets are not supported on this platform"}),
    )
}
