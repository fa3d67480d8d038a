//! Websockets inside an intercepted tunnel, end to end through real sockets and real TLS: a
//! websocket client trusting netproxy's CA, the [`MitmInterceptor`] driven directly with a gate
//! that judges inner requests in full or limited mode, and a loopback TLS origin whose
//! certificate comes from a test CA the interceptor trusts.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use proxy_core::{
    Decision, Intercepted, Interceptor, Lease, Mode, Protocol, Reason, RequestMeta, Route, Target,
};
use proxy_mitm::{Ca, MitmInterceptor};
use proxy_test_support::{StubGate, TestCa, TlsOrigin, tls_client};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::{self, Message};

/// The tunnel's host, as the client's `CONNECT` named it.
const HOST: &str = "ws.test";
/// Generous bound for what should happen at once (never a performance assertion).
const PATIENCE: Duration = Duration::from_secs(10);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS server configuration for `HOST`, certified by `ca`, offering `h2` and `http/1.1` (so
/// the origin would take HTTP/2 if netproxy offered it).
fn origin_tls(ca: &TestCa) -> tokio_rustls::TlsAcceptor {
    let (cert, key) = ca.issue(&[HOST]).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A request's headers, names lowercase, in order.
type Headers = Vec<(String, String)>;

/// A websocket echo origin over TLS. It records each handshake request's headers and the ALPN
/// protocol each connection chose.
struct WsOrigin {
    addr: SocketAddr,
    handshakes: Arc<Mutex<Vec<Headers>>>,
    alpn: Arc<Mutex<Vec<Option<Vec<u8>>>>>,
    task: JoinHandle<()>,
}

impl Drop for WsOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WsOrigin {
    async fn start(ca: &TestCa) -> Self {
        let acceptor = origin_tls(ca);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let alpn = Arc::new(Mutex::new(Vec::new()));
        let (h, a) = (handshakes.clone(), alpn.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, h, a) = (acceptor.clone(), h.clone(), a.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    a.lock()
                        .unwrap()
                        .push(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec));
                    // The error type is tungstenite's callback's.
                    #[allow(clippy::result_large_err)]
                    let record = |req: &tungstenite::handshake::server::Request,
                                  mut resp: tungstenite::handshake::server::Response| {
                        // A subprotocol asked for is taken.
                        if let Some(p) = req.headers().get("sec-websocket-protocol") {
                            resp.headers_mut()
                                .insert("sec-websocket-protocol", p.clone());
                        }
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
                        h.lock().unwrap().push(headers);
                        Ok(resp)
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tls, record).await else {
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
        Self {
            addr,
            handshakes,
            alpn,
            task,
        }
    }

    fn handshakes(&self) -> Vec<Headers> {
        self.handshakes.lock().unwrap().clone()
    }
}

/// The interceptor under test, its gate and netproxy's CA.
struct Mitm {
    gate: Arc<StubGate>,
    ca: Arc<Ca>,
    interceptor: Arc<MitmInterceptor<StubGate>>,
}

impl Mitm {
    /// Judging inner requests in `mode`, trusting `upstream` as the origins' CA, closing a
    /// session after `idle` with no byte either way.
    fn new(mode: Mode, upstream: &TestCa, idle: Duration) -> Self {
        let (gate, ca, interceptor) = common::interceptor(upstream);
        gate.set_mode(mode);
        let interceptor = interceptor.with_idle_timeout(idle);
        Self {
            gate,
            ca,
            interceptor: Arc::new(interceptor),
        }
    }

    /// A tunnel to `HOST:443` routed to `origin`, as a front-end hands it over after its
    /// `200`: the client's TLS session through it (no ALPN, so HTTP/1.1 inside), and the
    /// session's task, which returns its byte counts.
    async fn tunnel(&self, origin: SocketAddr) -> (TlsStream<TcpStream>, JoinHandle<(u64, u64)>) {
        let client = tls_client(&[self.ca.cert_der().clone()]);
        self.tunnel_with(origin, client).await
    }

    /// The same with the client's own TLS configuration.
    async fn tunnel_with(
        &self,
        origin: SocketAddr,
        tls: tokio_rustls::TlsConnector,
    ) -> (TlsStream<TcpStream>, JoinHandle<(u64, u64)>) {
        let (client, accepted) = common::connected().await;
        let upstream = TcpStream::connect(origin).await.unwrap();
        let meta = RequestMeta::new(
            Protocol::HttpsConnect,
            Target::parse_authority(&format!("{HOST}:443"), 443).unwrap(),
        );
        let mut route = Route::direct(vec![origin], Decision::allow());
        route.intercept = true;
        let interceptor = self.interceptor.clone();
        let session = tokio::spawn(async move {
            interceptor
                .intercept(Intercepted {
                    client: accepted,
                    upstream,
                    meta,
                    route,
                    lease: Lease::none(),
                })
                .await
        });
        let tls = tls
            .connect(ServerName::try_from(HOST).unwrap(), client)
            .await
            .unwrap();
        (tls, session)
    }
}

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing after {PATIENCE:?}"))
}

#[tokio::test]
async fn full_mode_relays_a_websocket_both_ways_until_it_ends() {
    let upstream_ca = TestCa::new().unwrap();
    let origin = WsOrigin::start(&upstream_ca).await;
    let mitm = Mitm::new(Mode::Full, &upstream_ca, Duration::from_secs(60));
    let (tls, session) = mitm.tunnel(origin.addr).await;
    let mut request =
        tungstenite::client::IntoClientRequest::into_client_request(format!("wss://{HOST}/chat"))
            .unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "chat".parse().unwrap());
    let (mut ws, resp) = within("handshake", tokio_tungstenite::client_async(request, tls))
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    assert_eq!(resp.headers()["upgrade"], "websocket");
    assert_eq!(resp.headers()["sec-websocket-protocol"], "chat");

    within("text", ws.send(Message::text("hello through TLS")))
        .await
        .unwrap();
    let echoed = within("echo", ws.next()).await.unwrap().unwrap();
    assert_eq!(echoed, Message::text("hello through TLS"));
    let big = vec![7u8; 100_000];
    within("binary", ws.send(Message::binary(big.clone())))
        .await
        .unwrap();
    let echoed = within("echo", ws.next()).await.unwrap().unwrap();
    assert_eq!(echoed.into_data().as_ref(), big.as_slice());

    // The origin saw one handshake, with its headers, over HTTP/1.1 although it offered h2.
    let handshakes = origin.handshakes();
    assert_eq!(handshakes.len(), 1);
    let header = |name: &str| {
        handshakes[0]
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("host").as_deref(), Some(HOST));
    assert_eq!(header("connection").as_deref(), Some("upgrade"));
    assert_eq!(header("upgrade").as_deref(), Some("websocket"));
    assert_eq!(header("sec-websocket-version").as_deref(), Some("13"));
    assert_eq!(header("sec-websocket-protocol").as_deref(), Some("chat"));
    assert!(header("sec-websocket-key").is_some());
    assert_eq!(
        *origin.alpn.lock().unwrap(),
        [Some(b"http/1.1".to_vec())],
        "an HTTP/1.1 client's tunnel offers the origin HTTP/1.1 only"
    );

    // Judged once, as an upgrade, and allowed.
    let inner = mitm.gate.inner_seen();
    assert_eq!(inner.len(), 1);
    assert!(inner[0].0.upgrade);
    assert_eq!(inner[0].0.method.as_deref(), Some("GET"));
    assert!(inner[0].1.is_allowed());

    // The client closes the websocket: the session ends with it, its bytes counted.
    within("close", ws.close(None)).await.unwrap();
    while let Some(Ok(_)) = within("closing", ws.next()).await {}
    drop(ws);
    let (up, down) = within("the session's end", session).await.unwrap();
    assert!(up > 100_000 && down > 100_000, "{up} {down}");
}

#[tokio::test]
async fn limited_mode_refuses_the_upgrade_and_the_origin_never_sees_it() {
    let upstream_ca = TestCa::new().unwrap();
    let origin = WsOrigin::start(&upstream_ca).await;
    let mitm = Mitm::new(Mode::Limited, &upstream_ca, Duration::from_secs(60));
    let (tls, _session) = mitm.tunnel(origin.addr).await;
    let err = within(
        "handshake",
        tokio_tungstenite::client_async(format!("wss://{HOST}/chat"), tls),
    )
    .await
    .unwrap_err();
    let tungstenite::Error::Http(resp) = err else {
        panic!("{err}")
    };
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["x-proxy-error"], "blocked-by-method-policy");
    assert_eq!(resp.headers()["content-type"], "application/json");
    let inner = mitm.gate.inner_seen();
    assert_eq!(inner.len(), 1);
    assert!(inner[0].0.upgrade);
    assert_eq!(inner[0].1.reason, Some(Reason::MethodNotAllowed));
    assert!(origin.handshakes().is_empty());
}

/// An HTTP/1.1 client over `tls`, its connection driven in the background.
async fn http1(
    tls: TlsStream<TcpStream>,
) -> (
    hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    JoinHandle<()>,
) {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (sender, task)
}

fn get(path: &str) -> hyper::Request<Empty<Bytes>> {
    hyper::Request::get(path)
        .header("host", HOST)
        .body(Empty::new())
        .unwrap()
}

#[tokio::test]
async fn an_origin_answering_200_gives_the_client_that_200_and_the_session_goes_on() {
    let upstream_ca = TestCa::new().unwrap();
    let origin = TlsOrigin::start("plain", "127.0.0.1".parse().unwrap(), &upstream_ca, &[HOST])
        .await
        .unwrap();
    let mitm = Mitm::new(Mode::Full, &upstream_ca, Duration::from_secs(60));
    let (tls, _session) = mitm.tunnel(origin.addr()).await;
    let (mut sender, _conn) = http1(tls).await;
    let mut upgrade = get("/socket");
    let h = upgrade.headers_mut();
    h.insert("connection", "Upgrade, X-Remove".parse().unwrap());
    h.insert("upgrade", "websocket".parse().unwrap());
    h.insert(
        "sec-websocket-key",
        "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap(),
    );
    h.insert("sec-websocket-version", "13".parse().unwrap());
    h.insert("x-remove", "1".parse().unwrap());
    h.insert("x-kept", "2".parse().unwrap());
    let resp = within("the answer", sender.send_request(upgrade))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-origin"], "plain");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "GET /socket 0");
    let seen = origin.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("connection"), Some("upgrade"));
    assert_eq!(seen[0].header("upgrade"), Some("websocket"));
    assert_eq!(
        seen[0].header("sec-websocket-key"),
        Some("dGhlIHNhbXBsZSBub25jZQ==")
    );
    assert_eq!(seen[0].header("sec-websocket-version"), Some("13"));
    assert_eq!(seen[0].header("x-kept"), Some("2"));
    assert_eq!(seen[0].header("x-remove"), None, "named by Connection");

    // No upgrade happened: the same session serves the next request.
    within("ready", sender.ready()).await.unwrap();
    let resp = within("the next answer", sender.send_request(get("/next")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "GET /next 0");
    assert_eq!(origin.seen().len(), 2);
}

/// The origin answers the handshake `200` and closes its connection (`/close...`): the
/// session ends after that answer, as after any request the origin closes on, so the client's
/// next request comes through a new tunnel.
#[tokio::test]
async fn an_origin_that_answers_200_and_closes_ends_the_session() {
    let upstream_ca = TestCa::new().unwrap();
    let origin = TlsOrigin::start("plain", "127.0.0.1".parse().unwrap(), &upstream_ca, &[HOST])
        .await
        .unwrap();
    let mitm = Mitm::new(Mode::Full, &upstream_ca, Duration::from_secs(60));
    let (tls, session) = mitm.tunnel(origin.addr()).await;
    let (mut sender, _conn) = http1(tls).await;
    let mut upgrade = get("/close-socket");
    upgrade
        .headers_mut()
        .insert("connection", "upgrade".parse().unwrap());
    upgrade
        .headers_mut()
        .insert("upgrade", "websocket".parse().unwrap());
    let resp = within("the answer", sender.send_request(upgrade))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "GET /close-socket 0");
    within("the session's end", session).await.unwrap();
}

/// An origin that answers every request head `101 Switching Protocols`, asked or not.
async fn switching_origin(ca: &TestCa) -> (SocketAddr, JoinHandle<()>) {
    let acceptor = origin_tls(ca);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let mut tls = acceptor.accept(tcp).await?;
                let mut head = Vec::new();
                let mut buf = [0; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = tls.read(&mut buf).await?;
                    if n == 0 {
                        return Ok(());
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                tls.write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
                )
                .await?;
                // Keep the connection open: the session must not hang on it.
                let _ = tls.read(&mut buf).await;
                Ok::<_, std::io::Error>(())
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_switch_nobody_asked_for_is_a_502() {
    let upstream_ca = TestCa::new().unwrap();
    let (addr, origin) = switching_origin(&upstream_ca).await;
    let mitm = Mitm::new(Mode::Full, &upstream_ca, Duration::from_secs(60));
    let (tls, session) = mitm.tunnel(addr).await;
    let (mut sender, _conn) = http1(tls).await;
    let resp = within("the answer", sender.send_request(get("/plain")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("\"reason\":\"upstream_error\""), "{text}");
    assert!(text.contains("switched protocols"), "{text}");
    // The upstream connection is spent: the session ends, and the client's next request
    // comes through a new tunnel.
    within("the session's end", session).await.unwrap();
    origin.abort();
}

#[tokio::test]
async fn an_idle_websocket_is_closed() {
    let upstream_ca = TestCa::new().unwrap();
    let origin = WsOrigin::start(&upstream_ca).await;
    let idle = Duration::from_millis(300);
    let mitm = Mitm::new(Mode::Full, &upstream_ca, idle);
    let (tls, session) = mitm.tunnel(origin.addr).await;
    let (mut ws, _) = within(
        "handshake",
        tokio_tungstenite::client_async(format!("wss://{HOST}/quiet"), tls),
    )
    .await
    .unwrap();
    within("text", ws.send(Message::text("once")))
        .await
        .unwrap();
    let echoed = within("echo", ws.next()).await.unwrap().unwrap();
    assert_eq!(echoed, Message::text("once"));
    // Then nothing either way: the session closes on its own, and the client sees the end.
    let (up, down) = within("the idle session's end", session).await.unwrap();
    assert!(up > 0 && down > 0, "{up} {down}");
    match within("the client's end", ws.next()).await {
        None | Some(Err(_)) => {}
        Some(Ok(m)) => assert!(m.is_close(), "{m:?}"),
    }
}

/// A client that announces `h2` in its ALPN but speaks HTTP/1.1 inside (the inner server reads
/// which one it speaks): its tunnel offers the origin `h2`, which the origin takes, and a
/// websocket cannot be asked over HTTP/2. The client gets a clear 502, not a hang.
#[tokio::test]
async fn a_websocket_over_an_http2_upstream_is_a_clear_502() {
    let upstream_ca = TestCa::new().unwrap();
    let origin = WsOrigin::start(&upstream_ca).await;
    let mitm = Mitm::new(Mode::Full, &upstream_ca, Duration::from_secs(60));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(mitm.ca.cert_der().clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let (tls, _session) = mitm
        .tunnel_with(
            origin.addr,
            tokio_rustls::TlsConnector::from(Arc::new(config)),
        )
        .await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let err = within(
        "handshake",
        tokio_tungstenite::client_async(format!("wss://{HOST}/chat"), tls),
    )
    .await
    .unwrap_err();
    let tungstenite::Error::Http(resp) = err else {
        panic!("{err}")
    };
    assert_eq!(resp.status(), 502);
    let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned();
    assert!(
        body.is_empty()
            || (body.contains("\"reason\":\"upstream_error\"")
                && body.contains("a websocket upgrade needs HTTP/1.1")),
        "{body}"
    );
    // The origin took h2 (it records that when its side of the handshake is done).
    within("the origin's ALPN", async {
        while origin.alpn.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(*origin.alpn.lock().unwrap(), [Some(b"h2".to_vec())]);
    assert!(origin.handshakes().is_empty());
}

/// A websocket is held like a tunnel: when the gate revokes its lease (a narrower policy), the
/// relay ends and the session with it.
#[tokio::test]
async fn a_revoked_websocket_is_closed() {
    let upstream_ca = TestCa::new().unwrap();
    let origin = WsOrigin::start(&upstream_ca).await;
    let mitm = Mitm::new(Mode::Full, &upstream_ca, Duration::from_secs(60));
    let (tls, session) = mitm.tunnel(origin.addr).await;
    let (mut ws, _) = within(
        "handshake",
        tokio_tungstenite::client_async(format!("wss://{HOST}/chat"), tls),
    )
    .await
    .unwrap();
    within("text", ws.send(Message::text("before")))
        .await
        .unwrap();
    let echoed = within("echo", ws.next()).await.unwrap().unwrap();
    assert_eq!(echoed, Message::text("before"));
    // One lease, for the upgraded inner request.
    let held = mitm.gate.held();
    assert_eq!(held.len(), 1, "{held:?}");
    assert!(held[0].upgrade && held[0].protocol == Protocol::Https);
    assert_eq!(mitm.gate.revoke(|m| m.upgrade), 1);
    // The relay ends: the client sees its connection close, the session returns.
    loop {
        match within("the close", ws.next()).await {
            Some(Ok(Message::Text(t))) => panic!("relayed after the revocation: {t}"),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
    within("the session's end", session).await.unwrap();
}

/// A `101` that does not answer the websocket handshake (no accept value of the client's key)
/// is not relayed: a 502.
#[tokio::test]
async fn a_switch_without_the_websockets_accept_value_is_a_502() {
    let upstream_ca = TestCa::new().unwrap();
    let (addr, origin) = switching_origin(&upstream_ca).await;
    let mitm = Mitm::new(Mode::Full, &upstream_ca, Duration::from_secs(60));
    let (tls, session) = mitm.tunnel(addr).await;
    let err = within(
        "handshake",
        tokio_tungstenite::client_async(format!("wss://{HOST}/chat"), tls),
    )
    .await
    .unwrap_err();
    let tungstenite::Error::Http(resp) = err else {
        panic!("{err}")
    };
    assert_eq!(resp.status(), 502);
    let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned();
    assert!(body.contains("not a websocket handshake"), "{body}");
    within("the session's end", session).await.unwrap();
    origin.abort();
}
