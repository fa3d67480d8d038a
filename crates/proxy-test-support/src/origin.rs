//! Recording origin servers on loopback: an HTTP/1.1 server and a TCP echo server.
//!
//! The HTTP origin answers:
//! - `GET /bytes/N`: N bytes (streamed in 64 KiB chunks);
//! - `GET /sleep/MS`: waits MS milliseconds, then answers;
//! - anything else: `METHOD PATH BODY_BYTES` (the body is read and counted, never buffered).
//!
//! Every response carries `x-origin: NAME`; every request is recorded.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One request as the origin saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The method.
    pub method: String,
    /// The request target as received (origin-form when it came through a proxy).
    pub target: String,
    /// The headers, names lowercase, in order.
    pub headers: Vec<(String, String)>,
    /// How many body bytes arrived.
    pub body_bytes: u64,
}

impl Seen {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP origin. Dropping it stops it.
#[derive(Debug)]
pub struct HttpOrigin {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Drop for HttpOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) type Body = BoxBody<Bytes, Infallible>;

fn full(text: String) -> Body {
    http_body_util::Full::new(Bytes::from(text)).boxed()
}

pub(crate) async fn handle(
    name: Arc<str>,
    seen: Arc<Mutex<Vec<Seen>>>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().to_string();
    let target = req.uri().to_string();
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let path = req.uri().path().to_owned();
    let mut body = req.into_body();
    let mut body_bytes = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => body_bytes += f.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => break,
        }
    }
    seen.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(Seen {
            method: method.clone(),
            target,
            headers,
            body_bytes,
        });
    let response = if let Some(n) = path
        .strip_prefix("/bytes/")
        .and_then(|n| n.parse::<u64>().ok())
    {
        Response::new(Repeat { left: n }.boxed())
    } else if let Some(ms) = path
        .strip_prefix("/sleep/")
        .and_then(|n| n.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Response::new(full(format!("slept {ms}")))
    } else {
        Response::new(full(format!("{method} {path} {body_bytes}")))
    };
    let mut response = response;
    if let Ok(v) = http::HeaderValue::from_str(&name) {
        response.headers_mut().insert("x-origin", v);
    }
    // `/close...`: the origin closes its connection after this response.
    if path.starts_with("/close") {
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    Ok(response)
}

/// A body of `left` bytes of `x`, produced 64 KiB at a time.
#[derive(Debug)]
struct Repeat {
    left: u64,
}

impl hyper::body::Body for Repeat {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = self.left.min(65536);
        self.left -= n;
        let len = usize::try_from(n).unwrap_or(65536);
        std::task::Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; len])))))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.left)
    }
}

impl HttpOrigin {
    /// Starts an origin named `name` on `ip` (a loopback address), port ephemeral.
    pub async fn start(name: &str, ip: std::net::IpAddr) -> std::io::Result<Self> {
        assert!(ip.is_loopback(), "test origins listen on loopback only");
        let listener = TcpListener::bind((ip, 0)).await?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let name: Arc<str> = name.into();
        let s = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (name, seen) = (name.clone(), s.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        handle(name.clone(), seen.clone(), req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Ok(Self { addr, seen, task })
    }

    /// The address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// A TCP echo server that counts its connections. Dropping it stops it.
#[derive(Debug)]
pub struct EchoServer {
    addr: SocketAddr,
    connections: Arc<Mutex<u64>>,
    task: JoinHandle<()>,
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EchoServer {
    /// Starts an echo server on `ip` (a loopback address).
    pub async fn start(ip: std::net::IpAddr) -> std::io::Result<Self> {
        assert!(ip.is_loopback(), "test origins listen on loopback only");
        let listener = TcpListener::bind((ip, 0)).await?;
        let addr = listener.local_addr()?;
        let connections = Arc::new(Mutex::new(0));
        let c = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                *c.lock().unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16384];
                    loop {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => {
                                let _ = stream.shutdown().await;
                                return;
                            }
                            Ok(n) => {
                                if stream.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        Ok(Self {
            addr,
            connections,
            task,
        })
    }

    /// The address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many connections it accepted.
    pub fn connections(&self) -> u64 {
        *self
            .connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A websocket echo server: every text or binary message comes back. Dropping it stops it.
#[derive(Debug)]
pub struct WsEchoServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for WsEchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WsEchoServer {
    /// Starts a websocket echo server on `ip` (a loopback address).
    pub async fn start(ip: std::net::IpAddr) -> std::io::Result<Self> {
        use futures_util::{SinkExt, StreamExt};
        assert!(ip.is_loopback(), "test origins listen on loopback only");
        let listener = TcpListener::bind((ip, 0)).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    while let Some(Ok(msg)) = ws.next().await {
                        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok(Self { addr, task })
    }

    /// The address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}
