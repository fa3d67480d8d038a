//! The HTTP front-end over real loopback sockets, with a stub gate, the recording dialer,
//! loopback origins and real curl.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proxy_core::{
    Admission, Decision, Failure, Interceptor, Mode, NoInterception, Protocol, Reason,
    UpstreamFailure,
};
use proxy_http::{Limits, TunnelClient, run};
use proxy_test_support::{
    Curl, EchoServer, GreetingInterceptor, HttpOrigin, RecordingDialer, StubGate,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Proxy {
    addr: SocketAddr,
    gate: Arc<StubGate>,
    dialer: RecordingDialer,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn proxy(limits: Limits) -> Proxy {
    proxy_with(limits, |_| Arc::new(NoInterception)).await
}

/// A proxy whose interceptor `interceptor` makes from its gate.
async fn proxy_with<I>(limits: Limits, interceptor: impl FnOnce(Arc<StubGate>) -> Arc<I>) -> Proxy
where
    I: Interceptor<TunnelClient, proxy_io::Conn> + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let gate = Arc::new(StubGate::new());
    let dialer = RecordingDialer::new();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(
        listener,
        gate.clone(),
        Arc::new(dialer.clone()),
        interceptor(gate.clone()),
        limits,
        async {
            let _ = rx.await;
        },
    ));
    Proxy {
        addr,
        gate,
        dialer,
        stop: Some(tx),
        task,
    }
}

fn limits() -> Limits {
    Limits {
        header_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(800),
        ..Limits::default()
    }
}

/// Runs curl in a blocking thread: (status code, headers + body).
async fn curl(args: Vec<String>) -> (String, String) {
    tokio::task::spawn_blocking(move || {
        let out = Curl::new().arg("-i").args(args).run();
        (out.status.to_string(), out.text())
    })
    .await
    .unwrap()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_post_are_forwarded_with_streamed_bodies() {
    let origin = HttpOrigin::start("o1", "127.0.0.1".parse().unwrap())
        .await
        .unwrap();
    let p = proxy(limits()).await;
    p.gate.route("origin.test", origin.addr());
    let port = origin.addr().port();
    let x = format!("http://{}", p.addr);

    let (status, text) = curl(s(&[
        "-x",
        &x,
        &format!("http://origin.test:{port}/hello?q=1"),
        "-H",
        "Proxy-Authorization: Basic c2VjcmV0",
        "-H",
        "Connection: keep-alive, X-Drop-Me",
        "-H",
        "X-Drop-Me: yes",
        "-H",
        "X-Keep: 1",
    ]))
    .await;
    assert_eq!(status, "200", "{text}");
    assert!(text.contains("GET /hello 0"), "{text}");
    assert!(text.to_ascii_lowercase().contains("x-origin: o1"), "{text}");
    let seen = origin.seen();
    assert_eq!(seen[0].target, "/hello?q=1");
    assert_eq!(
        seen[0].header("host"),
        Some(format!("origin.test:{port}").as_str())
    );
    assert_eq!(seen[0].header("proxy-authorization"), None);
    assert_eq!(seen[0].header("x-drop-me"), None);
    assert_eq!(seen[0].header("x-keep"), Some("1"));

    // A 5 MiB upload and a 5 MiB download, streamed.
    let dir = std::env::temp_dir().join(format!("netproxy-upload-{}", std::process::id()));
    std::fs::write(&dir, vec![b'a'; 5 * 1024 * 1024]).unwrap();
    let (status, text) = curl(s(&[
        "-x",
        &x,
        &format!("http://origin.test:{port}/upload"),
        "--data-binary",
        &format!("@{}", dir.display()),
    ]))
    .await;
    let _ = std::fs::remove_file(&dir);
    assert_eq!(status, "200", "{text}");
    assert!(
        text.contains(&format!("POST /upload {}", 5 * 1024 * 1024)),
        "{}",
        &text[..200.min(text.len())]
    );
    // curl asked `Expect: 100-continue` for the large body; the exchange went through.
    let upload = origin
        .seen()
        .into_iter()
        .find(|s| s.target == "/upload")
        .unwrap();
    assert_eq!(upload.header("expect"), Some("100-continue"));
    let (_, text) = curl(s(&[
        "-x",
        &x,
        &format!("http://origin.test:{port}/bytes/5242880"),
        "-o",
        "/dev/null",
        "-w",
        "\ncode=%{http_code} size=%{size_download}",
    ]))
    .await;
    assert!(text.contains("code=200 size=5242880"), "{text}");
    // The gate saw http requests with methods and the client address.
    let seen = p.gate.seen();
    assert_eq!(seen[0].method.as_deref(), Some("GET"));
    assert!(seen[0].client.unwrap().ip().is_loopback());
    assert!(p.dialer.dials().iter().all(|a| *a == origin.addr()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_failures_on_the_wire() {
    let p = proxy(limits()).await;
    let x = format!("http://{}", p.addr);
    p.gate
        .answer("evil.test", Admission::Deny(Decision::deny(Reason::Denied)));
    p.gate.answer(
        "off.test",
        Admission::Deny(Decision::deny(Reason::ProxyDisabled)),
    );
    p.gate.answer(
        "nxdomain.test",
        Admission::Fail(Failure::new(UpstreamFailure::DnsFailed, "NXDOMAIN")),
    );
    // A port nobody listens on.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    p.gate.route("closed.test", closed);

    let (status, text) = curl(s(&["-x", &x, "http://evil.test/"])).await;
    assert_eq!(status, "403", "{text}");
    assert!(
        text.contains("x-proxy-error: blocked-by-denylist"),
        "{text}"
    );
    assert!(text.contains("\"reason\":\"denied\""), "{text}");
    assert!(text.contains("\"protocol\":\"http\""), "{text}");
    assert!(text.contains("\"host\":\"evil.test\""), "{text}");
    assert!(text.contains("\"port\":80"), "{text}");
    let (status, text) = curl(s(&["-x", &x, "http://other.test/"])).await;
    assert_eq!(status, "403");
    assert!(
        text.contains("x-proxy-error: blocked-by-allowlist"),
        "{text}"
    );
    let (status, text) = curl(s(&["-x", &x, "http://off.test/"])).await;
    assert_eq!(status, "503", "{text}");
    assert!(!text.contains("x-proxy-error"), "{text}");
    let (status, text) = curl(s(&["-x", &x, "http://nxdomain.test/"])).await;
    assert_eq!(status, "502", "{text}");
    assert!(text.contains("\"reason\":\"dns_failed\""), "{text}");
    let (status, text) = curl(s(&["-x", &x, "http://closed.test/"])).await;
    assert_eq!(status, "502", "{text}");
    assert!(text.contains("\"reason\":\"connect_failed\""), "{text}");
    // A refused CONNECT: curl reports the proxy's 403.
    let (_, text) = curl(s(&["-x", &x, "-p", "http://evil.test:443/"])).await;
    assert!(text.contains("403"), "{text}");
    // A host that cannot be canonicalised.
    let mut c = TcpStream::connect(p.addr).await.unwrap();
    c.write_all(b"GET http://a..b.test/ HTTP/1.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out).await.unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.starts_with("HTTP/1.1 403 Blocked by netproxy (invalid_host)\r\n"),
        "{out}"
    );
    assert!(out.contains("\"reason\":\"invalid_host\""), "{out}");
    // The status line names netproxy and the reason, for a request and for a CONNECT; the
    // JSON body ends with a newline.
    for head in [
        &b"GET http://evil.test/ HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n"[..],
        b"CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n",
    ] {
        let r = raw_exchange(p.addr, head).await;
        assert!(
            r.starts_with("HTTP/1.1 403 Blocked by netproxy (denied)\r\n"),
            "{r}"
        );
        assert!(r.ends_with("}\n"), "{r:?}");
    }
    let r = raw_exchange(
        p.addr,
        b"GET http://other.test/ HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        r.starts_with("HTTP/1.1 403 Blocked by netproxy (not_allowed)\r\n"),
        "{r}"
    );
    assert!(
        r.contains("\"message\":\"Blocked by netproxy: Domain not in allowlist.\""),
        "{r}"
    );
    // A disabled proxy, a failure and a malformed request name netproxy and their reason too,
    // in the status line and the message; every body ends with a newline.
    for (head, line, message) in [
        (
            &b"GET http://off.test/ HTTP/1.1\r\nHost: off.test\r\nConnection: close\r\n\r\n"[..],
            "HTTP/1.1 503 Blocked by netproxy (proxy_disabled)\r\n",
            "\"message\":\"Blocked by netproxy: ",
        ),
        (
            b"GET http://closed.test/ HTTP/1.1\r\nHost: closed.test\r\nConnection: close\r\n\r\n",
            "HTTP/1.1 502 Bad Gateway (netproxy: connect_failed)\r\n",
            "\"message\":\"netproxy: ",
        ),
        (
            b"CONNECT nxdomain.test:443 HTTP/1.1\r\nHost: nxdomain.test:443\r\n\r\n",
            "HTTP/1.1 502 Bad Gateway (netproxy: dns_failed)\r\n",
            "\"message\":\"netproxy: ",
        ),
        (
            b"GET /relative HTTP/1.1\r\nHost: x.test\r\nConnection: close\r\n\r\n",
            "HTTP/1.1 400 Bad Request (netproxy: bad_request)\r\n",
            "\"message\":\"netproxy: ",
        ),
    ] {
        let r = raw_exchange(p.addr, head).await;
        assert!(r.starts_with(line), "{r}");
        assert!(r.contains(message), "{r}");
        assert!(r.ends_with("}\n"), "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_timeout_is_a_504_not_a_hang() {
    let origin = HttpOrigin::start("slow", "127.0.0.1".parse().unwrap())
        .await
        .unwrap();
    let p = proxy(limits()).await;
    p.gate.route("slow.test", origin.addr());
    let start = Instant::now();
    let (status, text) = curl(s(&[
        "-x",
        &format!("http://{}", p.addr),
        &format!("http://slow.test:{}/sleep/5000", origin.addr().port()),
    ]))
    .await;
    assert_eq!(status, "504", "{text}");
    assert!(text.contains("upstream_timeout"), "{text}");
    assert!(
        text.starts_with("HTTP/1.1 504 Gateway Timeout (netproxy: upstream_timeout)\r\n"),
        "{text}"
    );
    // idle_timeout is 800 ms; allow 3x.
    assert!(
        start.elapsed() < Duration::from_millis(2400),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_tunnels_bytes_both_ways() {
    let echo = EchoServer::start("127.0.0.1".parse().unwrap())
        .await
        .unwrap();
    let p = proxy(limits()).await;
    p.gate.route("echo.test", echo.addr());
    let mut c = TcpStream::connect(p.addr).await.unwrap();
    c.write_all(b"CONNECT echo.test:7 HTTP/1.1\r\nHost: echo.test:7\r\n\r\n")
        .await
        .unwrap();
    let mut head = vec![0u8; 1024];
    let n = c.read(&mut head).await.unwrap();
    let head = String::from_utf8_lossy(&head[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    c.write_all(b"ping through the tunnel").await.unwrap();
    let mut buf = vec![0u8; 64];
    let n = c.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"ping through the tunnel");
    // Half-close: the echo server sees EOF and closes its side.
    c.shutdown().await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(3), c.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0);
    assert_eq!(echo.connections(), 1);
    let seen = p.gate.seen();
    assert_eq!(seen[0].protocol, proxy_core::Protocol::HttpsConnect);
    assert_eq!(seen[0].target.port(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_400_and_the_proxy_keeps_serving() {
    let origin = HttpOrigin::start("o", "127.0.0.1".parse().unwrap())
        .await
        .unwrap();
    let p = proxy(limits()).await;
    p.gate.route("origin.test", origin.addr());
    let port = origin.addr().port();
    let raw = |req: String| async move {
        let mut c = TcpStream::connect(p.addr).await.unwrap();
        c.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), c.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    };
    // Origin-form to the proxy itself.
    let r = raw("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into()).await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    // Host header that disagrees with the URI.
    let r = raw(format!(
        "GET http://origin.test:{port}/ HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n"
    ))
    .await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert!(r.contains("does not match"), "{r}");
    // Smuggling shapes.
    let r = raw(format!("POST http://origin.test:{port}/ HTTP/1.1\r\nHost: origin.test:{port}\r\nContent-Length: 5\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello")).await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    let r = raw(format!("POST http://origin.test:{port}/ HTTP/1.1\r\nHost: origin.test:{port}\r\nTransfer-Encoding: chunked, gzip\r\nConnection: close\r\n\r\n")).await;
    assert!(
        r.starts_with("HTTP/1.1 400") || r.starts_with("HTTP/1.1 501"),
        "{r}"
    );
    // Headers over the limit.
    let big = "a".repeat(70_000);
    let r = raw(format!("GET http://origin.test:{port}/ HTTP/1.1\r\nHost: origin.test:{port}\r\nX-Big: {big}\r\n\r\n")).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{}", &r[..r.len().min(100)]);
    // Garbage.
    let r = raw("\x16\x03\x01\x00\x05hello\r\n\r\n".into()).await;
    assert!(r.is_empty() || r.starts_with("HTTP/1.1 400"), "{r}");
    // None of these reached the origin, and the proxy still serves.
    assert!(origin.seen().is_empty(), "{:?}", origin.seen());
    let (status, _) = curl(s(&[
        "-x",
        &format!("http://{}", p.addr),
        &format!("http://origin.test:{port}/"),
    ]))
    .await;
    assert_eq!(status, "200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_closed_after_the_header_timeout() {
    let p = proxy(limits()).await;
    let mut c = TcpStream::connect(p.addr).await.unwrap();
    c.write_all(b"GET http://origin.test/ HTTP/1.1\r\nHost: orig")
        .await
        .unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    // header_timeout is 500 ms; allow 3x.
    let r = tokio::time::timeout(Duration::from_millis(1500), c.read_to_end(&mut buf)).await;
    assert!(
        r.is_ok(),
        "the connection is still open after {:?}",
        start.elapsed()
    );
    assert!(p.gate.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_and_returns() {
    let mut p = proxy(limits()).await;
    let _ = p.stop.take().unwrap().send(());
    tokio::time::timeout(Duration::from_secs(5), &mut p.task)
        .await
        .unwrap()
        .unwrap();
    assert!(TcpStream::connect(p.addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_reuses_one_upstream_connection_per_target() {
    let origin = HttpOrigin::start("o", "127.0.0.1".parse().unwrap())
        .await
        .unwrap();
    let other = HttpOrigin::start("p", "127.0.0.1".parse().unwrap())
        .await
        .unwrap();
    let p = proxy(limits()).await;
    p.gate.route("origin.test", origin.addr());
    p.gate.route("other.test", other.addr());
    let (a, b) = (origin.addr().port(), other.addr().port());
    let x = format!("http://{}", p.addr);
    // One curl, one client connection, four requests (two targets).
    let (_, text) = curl(s(&[
        "-x",
        &x,
        &format!("http://origin.test:{a}/1"),
        &format!("http://origin.test:{a}/2"),
        &format!("http://other.test:{b}/3"),
        &format!("http://origin.test:{a}/4"),
    ]))
    .await;
    for n in 1..=4 {
        assert!(text.contains(&format!("GET /{n} 0")), "{text}");
    }
    // The gate judged every request; the dialer dialled once per change of target.
    assert_eq!(p.gate.seen().len(), 4);
    assert_eq!(p.dialer.dials().len(), 3, "{:?}", p.dialer.dials());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_become_tunnels() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::Role;

    let ws = proxy_test_support::WsEchoServer::start("127.0.0.1".parse().unwrap())
        .await
        .unwrap();
    let p = proxy(limits()).await;
    p.gate.route("ws.test", ws.addr());
    let port = ws.addr().port();
    let mut c = TcpStream::connect(p.addr).await.unwrap();
    let handshake = format!(
        "GET http://ws.test:{port}/chat HTTP/1.1\r\nHost: ws.test:{port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    c.write_all(handshake.as_bytes()).await.unwrap();
    // Read the response head byte by byte so no frame byte is consumed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(
            c.read(&mut b).await.unwrap(),
            1,
            "closed during the handshake: {head:?}"
        );
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    let mut ws_client =
        tokio_tungstenite::WebSocketStream::from_raw_socket(c, Role::Client, None).await;
    for text in ["hello", "through the proxy"] {
        ws_client.send(Message::text(text)).await.unwrap();
        let echo = tokio::time::timeout(Duration::from_secs(3), ws_client.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echo.into_text().unwrap().as_str(), text);
    }
    let seen = p.gate.seen();
    assert!(seen[0].upgrade, "the gate must know it is an upgrade");
    assert_eq!(seen[0].method.as_deref(), Some("GET"));
}

/// The soft limit on open files, from /proc (each tunnel here takes four descriptors).
fn open_file_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_tunnels() {
    const N: usize = 1000;
    assert!(
        open_file_limit() >= 4 * N as u64 + 200,
        "raise the open-file limit (ulimit -n 8192) to run this test; .ci/run does"
    );
    let echo = EchoServer::start("127.0.0.1".parse().unwrap())
        .await
        .unwrap();
    let p = proxy(Limits {
        idle_timeout: Duration::from_secs(30),
        ..limits()
    })
    .await;
    p.gate.route("echo.test", echo.addr());
    let addr = p.addr;
    // Open every tunnel and keep it; then check each one echoes.
    let mut opened = Vec::with_capacity(N);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..N {
        set.spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(b"CONNECT echo.test:7 HTTP/1.1\r\nHost: echo.test:7\r\n\r\n")
                .await
                .unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut b = [0u8; 1];
                assert_eq!(c.read(&mut b).await.unwrap(), 1);
                head.push(b[0]);
            }
            assert!(
                head.starts_with(b"HTTP/1.1 200"),
                "{}",
                String::from_utf8_lossy(&head)
            );
            (i, c)
        });
    }
    while let Some(r) = set.join_next().await {
        opened.push(r.unwrap());
    }
    assert_eq!(opened.len(), N);
    for (i, c) in &mut opened {
        let msg = format!("tunnel {i}");
        c.write_all(msg.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(10), c.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(buf, msg.as_bytes());
    }
    assert_eq!(echo.connections(), N as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_chunk_mid_body_aborts_both_sides() {
    let origin = HttpOrigin::start("o", "127.0.0.1".parse().unwrap())
        .await
        .unwrap();
    let p = proxy(limits()).await;
    p.gate.route("origin.test", origin.addr());
    let port = origin.addr().port();
    let mut c = TcpStream::connect(p.addr).await.unwrap();
    let head = format!(
        "POST http://origin.test:{port}/up HTTP/1.1\r\nHost: origin.test:{port}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    );
    c.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.write_all(b"zz\r\nnot a chunk\r\n").await.unwrap();
    let mut out = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(3), c.read_to_end(&mut out)).await;
    assert!(r.is_ok(), "the client connection was not closed");
    let out = String::from_utf8_lossy(&out);
    assert!(!out.starts_with("HTTP/1.1 200"), "{out}");
    // The origin never saw a complete body: it records the request once its body ends, here
    // with an error when the proxy aborts the upstream side.
    tokio::time::timeout(Duration::from_secs(10), async {
        while origin.seen().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the origin's side of the aborted request ended");
    assert!(
        origin.seen().iter().all(|s| s.body_bytes <= 5),
        "{:?}",
        origin.seen()
    );
    // And the proxy still serves.
    let (status, _) = curl(s(&[
        "-x",
        &format!("http://{}", p.addr),
        &format!("http://origin.test:{port}/"),
    ]))
    .await;
    assert_eq!(status, "200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_new_clients_wait_for_a_free_slot() {
    let origin = HttpOrigin::start("o", "127.0.0.1".parse().unwrap())
        .await
        .unwrap();
    let p = proxy(Limits {
        max_connections: 2,
        header_timeout: Duration::from_secs(10),
        ..limits()
    })
    .await;
    p.gate.route("origin.test", origin.addr());
    let port = origin.addr().port();
    // Two connections take both slots and send nothing.
    let first = TcpStream::connect(p.addr).await.unwrap();
    let _second = TcpStream::connect(p.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A third connects (the kernel's backlog accepts it) but is not served...
    let mut third = TcpStream::connect(p.addr).await.unwrap();
    third
        .write_all(format!("GET http://origin.test:{port}/ HTTP/1.1\r\nHost: origin.test:{port}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut buf)).await;
    assert!(early.is_err(), "served while both slots were taken");
    // ...until a slot frees.
    drop(first);
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), third.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_chunked_reaches_the_upstream_as_one_well_framed_request() {
    let origin = HttpOrigin::start("o", "127.0.0.1".parse().unwrap())
        .await
        .unwrap();
    let p = proxy(limits()).await;
    p.gate.route("origin.test", origin.addr());
    let port = origin.addr().port();
    let mut c = TcpStream::connect(p.addr).await.unwrap();
    // Content-Length says 4 bytes; chunked framing says "hello"; a smuggled request follows.
    let raw = format!(
        "POST http://origin.test:{port}/one HTTP/1.1\r\nHost: origin.test:{port}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: origin.test\r\nConnection: close\r\n\r\n"
    );
    c.write_all(raw.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("POST /one 5"), "{out}");
    // The connection is closed after such a request (RFC 9112 §6.3), so the trailing bytes
    // are never read as another request.
    assert!(
        out.to_ascii_lowercase().contains("connection: close"),
        "{out}"
    );
    assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "{out}");
    let seen = origin.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].body_bytes, 5);
    assert_eq!(seen[0].header("content-length"), None);
}

/// Sends raw bytes on a new connection and returns everything the proxy answers until it
/// closes (or 3 s pass).
async fn raw_exchange(proxy: SocketAddr, bytes: &[u8]) -> String {
    let mut c = TcpStream::connect(proxy).await.unwrap();
    c.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), c.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A request without a host is a bad request (400), whatever its form: `CONNECT :443` is no
/// exception (not a 403 `invalid_host`), and the gate is never asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_host_is_400() {
    let p = proxy(limits()).await;
    for head in [
        &b"CONNECT :443 HTTP/1.1\r\n\r\n"[..],
        b"CONNECT :443 HTTP/1.1\r\nHost: :443\r\n\r\n",
        b"CONNECT :8443 HTTP/1.1\r\nHost: example.test:8443\r\n\r\n",
        b"GET http://:8080/ HTTP/1.1\r\nConnection: close\r\n\r\n",
    ] {
        let r = raw_exchange(p.addr, head).await;
        let shown = String::from_utf8_lossy(head);
        assert!(r.starts_with("HTTP/1.1 400"), "{shown:?}: {r}");
        assert!(!r.contains("invalid_host"), "{shown:?}: {r}");
        assert!(!r.contains("x-proxy-error"), "{shown:?}: {r}");
    }
    assert!(p.gate.seen().is_empty());
    // A host that is there but cannot be canonicalised stays a 403 invalid_host.
    let r = raw_exchange(p.addr, b"CONNECT a..b.test:443 HTTP/1.1\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    assert!(r.contains("\"reason\":\"invalid_host\""), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_heads_malformed_oversized_refused_and_pipelined() {
    let echo = EchoServer::start("127.0.0.1".parse().unwrap())
        .await
        .unwrap();
    let p = proxy(limits()).await;
    p.gate.route("echo.test", echo.addr());
    p.gate
        .answer("evil.test", Admission::Deny(Decision::deny(Reason::Denied)));

    let r = raw_exchange(p.addr, b"CONNECT  HTTP/1.1\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    let r = raw_exchange(p.addr, b"CONNECT echo.test:0 HTTP/1.1\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    let r = raw_exchange(p.addr, b"CONNECT user@echo.test:7 HTTP/1.1\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    let big = format!(
        "CONNECT echo.test:7 HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70_000)
    );
    let r = raw_exchange(p.addr, big.as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{}", &r[..r.len().min(80)]);
    let r = raw_exchange(
        p.addr,
        b"CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    assert!(r.contains("x-proxy-error: blocked-by-denylist"), "{r}");
    assert!(r.contains("\"protocol\":\"https_connect\""), "{r}");
    assert!(r.contains("\"reason\":\"denied\""), "{r}");
    assert_eq!(echo.connections(), 0);

    // Bytes sent right behind the head are the tunnel's first bytes.
    let mut c = TcpStream::connect(p.addr).await.unwrap();
    c.write_all(b"CONNECT echo.test:7 HTTP/1.1\r\n\r\nearly bytes")
        .await
        .unwrap();
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).ends_with("early bytes") {
        let mut b = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(3), c.read(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&b[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_connect_head_is_closed_after_the_header_timeout() {
    let p = proxy(limits()).await;
    let mut c = TcpStream::connect(p.addr).await.unwrap();
    c.write_all(b"CONNECT echo.te").await.unwrap();
    let mut buf = Vec::new();
    // header_timeout is 500 ms; allow 3x.
    let r = tokio::time::timeout(Duration::from_millis(1500), c.read_to_end(&mut buf)).await;
    assert!(r.is_ok(), "still open");
    assert!(p.gate.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_after_a_plain_request_on_the_same_connection() {
    let origin = HttpOrigin::start("o", "127.0.0.1".parse().unwrap())
        .await
        .unwrap();
    let echo = EchoServer::start("127.0.0.1".parse().unwrap())
        .await
        .unwrap();
    let p = proxy(limits()).await;
    p.gate.route("origin.test", origin.addr());
    p.gate.route("echo.test", echo.addr());
    let port = origin.addr().port();
    let mut c = TcpStream::connect(p.addr).await.unwrap();
    c.write_all(
        format!("GET http://origin.test:{port}/first HTTP/1.1\r\nHost: origin.test:{port}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("GET /first 0") {
        let mut b = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(3), c.read(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&b[..n]);
    }
    c.write_all(b"CONNECT echo.test:7 HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(c.read(&mut b).await.unwrap(), 1);
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    c.write_all(b"after upgrade").await.unwrap();
    let mut buf = vec![0u8; 13];
    tokio::time::timeout(Duration::from_secs(3), c.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"after upgrade");
}

/// Reads a response head byte by byte, so that no byte after it is consumed.
async fn read_head(c: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 1, "closed after {:?}", String::from_utf8_lossy(&head));
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap()
}

/// Reads until the proxy closes the connection.
async fn read_rest(c: &mut TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8(out).unwrap()
}

/// Without an interceptor, a route that needs interception is refused `mitm_required`, for a
/// `CONNECT` and a plain request alike, and nothing is dialled: it never becomes a plain
/// tunnel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_to_intercept_is_refused_without_an_interceptor() {
    let echo = EchoServer::start("127.0.0.1".parse().unwrap())
        .await
        .unwrap();
    let p = proxy(limits()).await;
    p.gate.intercept("echo.test", echo.addr());
    for head in [
        &b"CONNECT echo.test:443 HTTP/1.1\r\nHost: echo.test:443\r\n\r\n"[..],
        b"GET http://echo.test/ HTTP/1.1\r\nHost: echo.test\r\nConnection: close\r\n\r\n",
    ] {
        let r = raw_exchange(p.addr, head).await;
        assert!(
            r.starts_with("HTTP/1.1 403 Blocked by netproxy (mitm_required)\r\n"),
            "{r}"
        );
        assert!(r.contains("x-proxy-error: blocked-by-mitm-required"), "{r}");
    }
    assert_eq!(p.gate.seen().len(), 2);
    assert!(p.dialer.dials().is_empty());
}

/// A `CONNECT` the gate routes to intercept is dialled, answered `200`, then handed to the
/// interceptor with the client's stream (bytes the client sent right behind its head
/// included) and the upstream connection; the interceptor asks the gate to judge a request
/// inside the tunnel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_to_intercept_goes_to_the_interceptor_after_the_200() {
    let echo = EchoServer::start("127.0.0.1".parse().unwrap())
        .await
        .unwrap();
    let mut greeter = None;
    let p = proxy_with(limits(), |gate| {
        let g = Arc::new(GreetingInterceptor::new(gate, "hello from inside"));
        greeter = Some(g.clone());
        g
    })
    .await;
    let greeter = greeter.unwrap();
    p.gate.intercept("echo.test", echo.addr());
    let connect = "CONNECT echo.test:443 HTTP/1.1\r\nHost: echo.test:443\r\n\r\n";

    // The client waits for the 200, then speaks inside the tunnel.
    let mut c = TcpStream::connect(p.addr).await.unwrap();
    c.write_all(connect.as_bytes()).await.unwrap();
    let head = read_head(&mut c).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    c.write_all(b"GET echo.test\n").await.unwrap();
    assert_eq!(read_rest(&mut c).await, "hello from inside GET echo.test\n");

    // The client does not wait: its first line arrives with the CONNECT head.
    let mut c = TcpStream::connect(p.addr).await.unwrap();
    c.write_all(format!("{connect}GET echo.test:443\n").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut c).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(
        read_rest(&mut c).await,
        "hello from inside GET echo.test:443\n"
    );

    // Requests inside the tunnel are judged by the gate: the tunnel's host only, and in
    // limited mode only reading methods.
    p.gate.set_mode(Mode::Limited);
    for (line, answer) in [
        ("POST echo.test\n", "refused method_not_allowed\n"),
        ("GET other.test\n", "refused not_allowed\n"),
        ("HEAD echo.test\n", "hello from inside HEAD echo.test\n"),
    ] {
        let mut c = TcpStream::connect(p.addr).await.unwrap();
        c.write_all(connect.as_bytes()).await.unwrap();
        assert!(read_head(&mut c).await.starts_with("HTTP/1.1 200 "));
        c.write_all(line.as_bytes()).await.unwrap();
        assert_eq!(read_rest(&mut c).await, answer);
    }

    let tunnels = greeter.tunnels();
    assert_eq!(tunnels.len(), 5);
    for (meta, route) in &tunnels {
        assert_eq!(meta.protocol, Protocol::HttpsConnect);
        assert_eq!(meta.target.to_string(), "echo.test:443");
        assert!(meta.client.unwrap().ip().is_loopback());
        assert!(route.intercept);
    }
    let inner = p.gate.inner_seen();
    assert_eq!(inner.len(), 5);
    assert!(inner.iter().all(|(m, _)| m.protocol == Protocol::Https));
    assert_eq!(inner[2].0.method.as_deref(), Some("POST"));
    assert_eq!(inner[2].1.reason, Some(Reason::MethodNotAllowed));
    assert_eq!(p.dialer.dials(), vec![echo.addr(); 5]);

    // An upstream that cannot be reached: 502, and the interceptor gets nothing.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    p.gate.intercept("closed.test", closed);
    let r = raw_exchange(
        p.addr,
        b"CONNECT closed.test:443 HTTP/1.1\r\nHost: closed.test:443\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 502 "), "{r}");
    assert!(r.contains("\"reason\":\"connect_failed\""), "{r}");
    assert_eq!(greeter.tunnels().len(), 5);
}

/// An origin on loopback that answers the first request head it reads with `answer`, then
/// reads on and says nothing more, keeping the connection open.
async fn answering_then_silent(answer: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                let mut answered = false;
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    if !answered && seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        answered = true;
                        let _ = s.write_all(answer).await;
                    }
                }
                // Held open until the peer closes.
                std::future::pending::<()>().await;
            });
        }
    });
    addr
}

/// Sends `head` through the proxy, keeps the connection open, and reads until the proxy
/// closes it: what came back, or `None` when it was still open after `within`.
async fn held_exchange(proxy: SocketAddr, head: &[u8], within: Duration) -> Option<String> {
    let mut c = TcpStream::connect(proxy).await.unwrap();
    c.write_all(head).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(within, c.read_to_end(&mut out)).await;
    read.ok()
        .map(|_| String::from_utf8_lossy(&out).into_owned())
}

/// An upstream that stops in the middle of a response body does not hold the client: the
/// upstream connection is closed after the idle timeout without a byte, and the response is
/// cut (the client sees fewer bytes than promised, never a body that looks whole).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_body_that_stalls_is_cut_after_the_idle_timeout() {
    let origin =
        answering_then_silent(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nhello").await;
    let p = proxy(limits()).await;
    p.gate.route("stall.test", origin);
    let head = format!(
        "GET http://stall.test:{}/ HTTP/1.1\r\nHost: stall.test:{}\r\n\r\n",
        origin.port(),
        origin.port()
    );
    // The idle timeout is 800 ms: closed within two periods; allow 3x.
    let got = held_exchange(p.addr, head.as_bytes(), Duration::from_millis(4800)).await;
    let got = got.expect("the connection was still open");
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    assert!(got.ends_with("\r\n\r\nhello"), "{got}");
}

/// A client that stops in the middle of a request body the upstream already answered does
/// not hold the connection either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_that_stalls_after_the_answer_is_closed_after_the_idle_timeout() {
    let origin = answering_then_silent(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
    let p = proxy(limits()).await;
    p.gate.route("early.test", origin);
    let head = format!(
        "POST http://early.test:{}/ HTTP/1.1\r\nHost: early.test:{}\r\nContent-Length: 1000\r\n\r\nhello",
        origin.port(),
        origin.port()
    );
    let got = held_exchange(p.addr, head.as_bytes(), Duration::from_millis(4800)).await;
    let got = got.expect("the connection was still open");
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    assert!(got.ends_with("\r\n\r\nok"), "{got}");
}

/// An origin that answers every request with a `content-length` body of `len` bytes, written
/// as fast as the proxy takes them.
async fn big_body_origin(len: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n");
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'x'; 64 * 1024];
                let mut left = len;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if s.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    left -= n;
                }
                std::future::pending::<()>().await;
            });
        }
    });
    addr
}

/// Reads a response head and then exactly `len` body bytes, or fails.
async fn read_body(c: &mut TcpStream, len: usize) -> std::io::Result<usize> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        c.read_exact(&mut byte).await?;
        head.push(byte[0]);
    }
    let mut got = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while got < len {
        let n = c.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
    }
    Ok(got)
}

/// A client that pauses reading holds the upstream back (back-pressure), which is no stall of
/// the upstream's: a pause shorter than the idle timeout leaves the download whole. A client
/// that stops reading for good is cut like an idle tunnel (two to four idle periods without a
/// byte either way), with a reset, and nothing is blamed on the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_pauses_reading_gets_its_body_and_one_that_stops_is_cut() {
    const LEN: usize = 32 * 1024 * 1024;
    let origin = big_body_origin(LEN).await;
    let idle = Duration::from_millis(1000);
    let p = proxy(Limits {
        idle_timeout: idle,
        ..limits()
    })
    .await;
    p.gate.route("big.test", origin);
    let head = format!(
        "GET http://big.test:{0}/ HTTP/1.1\r\nHost: big.test:{0}\r\n\r\n",
        origin.port()
    );
    let mut c = TcpStream::connect(p.addr).await.unwrap();
    c.write_all(head.as_bytes()).await.unwrap();
    // One idle period without reading a byte: the buffers fill and the origin waits.
    tokio::time::sleep(idle).await;
    let got = tokio::time::timeout(Duration::from_secs(60), read_body(&mut c, LEN))
        .await
        .expect("the download did not finish");
    assert_eq!(got.unwrap(), LEN);

    let mut c = TcpStream::connect(p.addr).await.unwrap();
    c.write_all(head.as_bytes()).await.unwrap();
    // Never reading: cut within four idle periods (allow six).
    tokio::time::sleep(idle * 6).await;
    let read = tokio::time::timeout(Duration::from_secs(60), read_body(&mut c, LEN))
        .await
        .expect("the stopped client's download did not end");
    assert!(
        read.is_err(),
        "a client that stopped reading for six idle periods got it all"
    );
    assert!(p.gate.failures().is_empty(), "{:?}", p.gate.failures());
}

/// A response whose body breaks off after its head reaches even an HTTP/1.0 client (whose body
/// ends with the connection) as a reset, never as a clean end that would pass for a whole body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_breaks_off_resets_an_http_1_0_client() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Then a reset in the middle of the chunked body.
        s.set_zero_linger().unwrap();
        drop(s);
    });
    let p = proxy(limits()).await;
    p.gate.route("cut.test", origin);
    let mut c = TcpStream::connect(p.addr).await.unwrap();
    let head = format!(
        "GET http://cut.test:{0}/ HTTP/1.0\r\nHost: cut.test:{0}\r\n\r\n",
        origin.port()
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut out))
        .await
        .expect("the connection was still open");
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("HTTP/1.0 200 OK\r\n") || text.starts_with("HTTP/1.1 200 OK\r\n"),
        "{text}"
    );
    assert!(text.ends_with("hello"), "{text}");
    assert_eq!(
        read.map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::ConnectionReset),
        "the client read a clean end: {text:?}"
    );
    let failures = p.gate.failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
}

/// A narrower policy that revokes a download in flight closes it (the client is reset) and
/// blames nothing on the upstream: the revocation is the gate's own event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_download_is_no_upstream_failure() {
    const LEN: usize = 64 * 1024 * 1024;
    let origin = big_body_origin(LEN).await;
    let p = proxy(limits()).await;
    p.gate.route("long.test", origin);
    let mut c = TcpStream::connect(p.addr).await.unwrap();
    let head = format!(
        "GET http://long.test:{0}/ HTTP/1.1\r\nHost: long.test:{0}\r\n\r\n",
        origin.port()
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let mut first = vec![0u8; 1024];
    c.read_exact(&mut first).await.unwrap();
    assert_eq!(
        p.gate
            .revoke(|m| m.target.to_string().starts_with("long.test")),
        1
    );
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut rest))
        .await
        .expect("the revoked download went on");
    assert!(
        read.is_err() || rest.len() + 1024 < LEN,
        "the download finished"
    );
    // Give a late failure record the time to show.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(p.gate.failures().is_empty(), "{:?}", p.gate.failures());
}
