//! A tunnel intercepted only if TLS (`Route::opaque_unless_tls`, a credential destination):
//! the [`MitmInterceptor`] driven directly through real loopback sockets. A TLS client is
//! intercepted and its request judged by the gate; a plaintext client, and a client that waits
//! for a server that speaks first (as SSH does), get an opaque tunnel with every byte intact;
//! the opaque tunnel still ends when its lease is revoked. A route intercepted always keeps
//! closing what is not TLS.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proxy_core::{Decision, Gate, Intercepted, Interceptor, Protocol, RequestMeta, Route, Target};
use proxy_mitm::{CLIENT_FIRST_WAIT, Ca, MitmInterceptor};
use proxy_test_support::{StubGate, TestCa, TlsOrigin, tls_client};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The tunnel's host, as the client's `CONNECT` named it.
const HOST: &str = "cred.test";
/// Generous bound for what should happen at once (never a performance assertion).
const PATIENCE: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing after {PATIENCE:?}"))
}

struct Mitm {
    gate: Arc<StubGate>,
    ca: Arc<Ca>,
    interceptor: Arc<MitmInterceptor<StubGate>>,
}

impl Mitm {
    /// Trusting `upstream` as the origins' CA.
    fn new(upstream: &TestCa) -> Self {
        let (gate, ca, interceptor) = common::interceptor(upstream);
        let interceptor = interceptor.with_idle_timeout(Duration::from_secs(60));
        Self {
            gate,
            ca,
            interceptor: Arc::new(interceptor),
        }
    }

    /// A tunnel to `HOST:443` reaching `origin`, as a front-end hands it over after its `200`
    /// (through [`proxy_io::intercept`], which ends it when its lease is revoked): the client's
    /// end, and the session's task.
    async fn tunnel(&self, origin: SocketAddr, if_tls: bool) -> (TcpStream, JoinHandle<()>) {
        let (client, accepted) = common::connected().await;
        let upstream = TcpStream::connect(origin).await.unwrap();
        let meta = RequestMeta::new(
            Protocol::HttpsConnect,
            Target::parse_authority(&format!("{HOST}:443"), 443).unwrap(),
        )
        .with_method("CONNECT");
        let mut route = Route::direct(vec![origin], Decision::allow());
        route.intercept = true;
        route.opaque_unless_tls = if_tls;
        Interceptor::<TcpStream, TcpStream>::accepts(&*self.interceptor, &meta, &route).unwrap();
        let lease = self.gate.hold(&meta, &route);
        let interceptor = self.interceptor.clone();
        let stats = Arc::new(proxy_io::Stats::default());
        let session = tokio::spawn(async move {
            let tunnel = Intercepted {
                client: accepted,
                upstream,
                meta,
                route,
                lease,
            };
            proxy_io::intercept(&*interceptor, tunnel, stats.tunnel()).await;
        });
        (client, session)
    }
}

/// A plain TCP origin for one connection: it sends `banner` first (if any), then records what
/// it reads until `expect` bytes arrived, answers `reply` and closes. Its task returns what it
/// read.
async fn raw_origin(
    banner: &'static [u8],
    expect: usize,
    reply: &'static [u8],
) -> (SocketAddr, JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        tcp.write_all(banner).await.unwrap();
        let mut got = vec![0u8; expect];
        if tcp.read_exact(&mut got).await.is_err() {
            return Vec::new();
        }
        tcp.write_all(reply).await.unwrap();
        tcp.shutdown().await.unwrap();
        got
    });
    (addr, task)
}

#[tokio::test]
async fn a_tls_client_is_intercepted_and_its_request_judged() {
    let upstream_ca = TestCa::new().unwrap();
    let origin = TlsOrigin::start(
        "origin",
        "127.0.0.1".parse().unwrap(),
        &upstream_ca,
        &[HOST],
    )
    .await
    .unwrap();
    let mitm = Mitm::new(&upstream_ca);
    let (client, session) = mitm.tunnel(origin.addr(), true).await;
    // The client trusts only netproxy's CA: the handshake succeeds only if intercepted.
    let mut tls = within(
        "handshake",
        tls_client(&[mitm.ca.cert_der().clone()])
            .connect(ServerName::try_from(HOST).unwrap(), client),
    )
    .await
    .unwrap();
    tls.write_all(b"GET /inside HTTP/1.1\r\nHost: cred.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    within("response", tls.read_to_end(&mut answer))
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let inner = mitm.gate.inner_seen();
    assert_eq!(inner.len(), 1, "{inner:?}");
    assert_eq!(inner[0].0.protocol, Protocol::Https);
    assert_eq!(inner[0].0.method.as_deref(), Some("GET"));
    assert_eq!(origin.seen().len(), 1);
    assert_eq!(origin.seen()[0].target, "/inside");
    within("session end", session).await.unwrap();
}

#[tokio::test]
async fn a_plaintext_client_gets_an_opaque_tunnel_with_its_bytes_intact() {
    let upstream_ca = TestCa::new().unwrap();
    let mitm = Mitm::new(&upstream_ca);
    let sent: &[u8] = b"GET / HTTP/1.1\r\nHost: cred.test\r\nAuthorization: Bearer dummy\r\n\r\n";
    let (origin, seen) = raw_origin(b"", sent.len(), b"plain answer").await;
    let (mut client, session) = mitm.tunnel(origin, true).await;
    client.write_all(sent).await.unwrap();
    let mut answer = Vec::new();
    within("answer", client.read_to_end(&mut answer))
        .await
        .unwrap();
    assert_eq!(answer, b"plain answer");
    assert_eq!(within("origin", seen).await.unwrap(), sent);
    // Nothing was judged inside: the tunnel was not intercepted.
    assert!(mitm.gate.inner_seen().is_empty());
    drop(client);
    within("session end", session).await.unwrap();
}

#[tokio::test]
async fn a_server_that_speaks_first_gets_an_opaque_tunnel() {
    let upstream_ca = TestCa::new().unwrap();
    let mitm = Mitm::new(&upstream_ca);
    let banner: &[u8] = b"SSH-2.0-origin\r\n";
    let hello: &[u8] = b"SSH-2.0-client\r\n";
    let (origin, seen) = raw_origin(banner, hello.len(), b"after").await;
    let (mut client, session) = mitm.tunnel(origin, true).await;
    // The client says nothing until the banner comes, which takes the peek's wait.
    let mut got = vec![0u8; banner.len()];
    tokio::time::timeout(
        CLIENT_FIRST_WAIT * 3 + PATIENCE,
        client.read_exact(&mut got),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(got, banner);
    client.write_all(hello).await.unwrap();
    let mut rest = Vec::new();
    within("rest", client.read_to_end(&mut rest)).await.unwrap();
    assert_eq!(rest, b"after");
    assert_eq!(within("origin", seen).await.unwrap(), hello);
    assert!(mitm.gate.inner_seen().is_empty());
    drop(client);
    within("session end", session).await.unwrap();
}

#[tokio::test]
async fn the_opaque_tunnel_ends_when_its_lease_is_revoked() {
    let upstream_ca = TestCa::new().unwrap();
    let mitm = Mitm::new(&upstream_ca);
    // The origin reads more than the client sends: the tunnel stays open until revoked.
    let (origin, seen) = raw_origin(b"", 1024, b"").await;
    let (mut client, session) = mitm.tunnel(origin, true).await;
    client.write_all(b"not tls at all\n").await.unwrap();
    // Give the peek time to decide, then revoke.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        mitm.gate
            .revoke(|m| m.target.to_string() == "cred.test:443"),
        1
    );
    within("session end", session).await.unwrap();
    let mut rest = Vec::new();
    // The client's end is closed (read ends), and so is the origin's.
    let _ = within("client closed", client.read_to_end(&mut rest)).await;
    assert!(rest.is_empty());
    assert!(within("origin closed", seen).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_route_intercepted_always_still_closes_what_is_not_tls() {
    let upstream_ca = TestCa::new().unwrap();
    let mitm = Mitm::new(&upstream_ca);
    let (origin, seen) = raw_origin(b"", 4, b"never").await;
    let (mut client, session) = mitm.tunnel(origin, false).await;
    client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    within("session end", session).await.unwrap();
    let mut rest = Vec::new();
    let _ = within("client closed", client.read_to_end(&mut rest)).await;
    assert!(rest.is_empty());
    // Nothing reached the origin.
    assert!(within("origin", seen).await.unwrap().is_empty());
}
