//! The SOCKS5 front-end over real loopback sockets, with a stub gate and the recording dialer.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proxy_core::{
    Admission, Decision, Failure, Interceptor, Mode, NoInterception, Protocol, Reason, Route,
    UpstreamFailure,
};
use proxy_socks::{Limits, RelaySocket, RelaySockets, run, run_with_relays};
use proxy_test_support::{EchoServer, GreetingInterceptor, RecordingDialer, StubGate};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing_subscriber::layer::SubscriberExt;

/// The audit events seen by this test binary, each as its fields.
type Events = Arc<Mutex<Vec<HashMap<String, String>>>>;

/// Installs (once) a global subscriber that keeps every event on `netproxy::audit`.
fn audit_events() -> Events {
    static EVENTS: std::sync::OnceLock<Events> = std::sync::OnceLock::new();
    EVENTS
        .get_or_init(|| {
            let events = Events::default();
            let subscriber = tracing_subscriber::registry().with(Capture(events.clone()));
            tracing::subscriber::set_global_default(subscriber).unwrap();
            events
        })
        .clone()
}

struct Capture(Events);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if event.metadata().target() == "netproxy::audit" {
            let mut fields = HashMap::new();
            event.record(&mut Fields(&mut fields));
            self.0.lock().unwrap().push(fields);
        }
    }
}

async fn proxy() -> (SocketAddr, Arc<StubGate>) {
    proxy_with(|_| Arc::new(NoInterception)).await
}

/// A SOCKS front-end (no UDP) whose interceptor `interceptor` makes from its gate.
async fn proxy_with<I>(
    interceptor: impl FnOnce(Arc<StubGate>) -> Arc<I>,
) -> (SocketAddr, Arc<StubGate>)
where
    I: Interceptor<TcpStream, proxy_io::Conn> + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let gate = Arc::new(StubGate::new());
    let limits = Limits {
        header_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(5),
        max_connections: 64,
        udp: false,
        proxy_auth: None,
        stats: Arc::default(),
        ..Limits::default()
    };
    tokio::spawn(run(
        listener,
        gate.clone(),
        Arc::new(RecordingDialer::new()),
        interceptor(gate.clone()),
        limits,
        std::future::pending(),
    ));
    (addr, gate)
}

/// Greets with no-auth and sends one request; returns the connection and the reply code.
async fn request(proxy: SocketAddr, cmd: u8, addr: &[u8]) -> (TcpStream, u8) {
    let mut c = TcpStream::connect(proxy).await.unwrap();
    c.write_all(&[5, 1, 0]).await.unwrap();
    let mut method = [0u8; 2];
    c.read_exact(&mut method).await.unwrap();
    assert_eq!(method, [5, 0]);
    let mut req = vec![5, cmd, 0];
    req.extend_from_slice(addr);
    c.write_all(&req).await.unwrap();
    let mut head = [0u8; 4];
    c.read_exact(&mut head).await.unwrap();
    assert_eq!(head[0], 5);
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut l = [0u8; 1];
            c.read_exact(&mut l).await.unwrap();
            usize::from(l[0]) + 2
        }
        other => panic!("bad reply address type {other}"),
    };
    let mut skip = vec![0u8; rest];
    c.read_exact(&mut skip).await.unwrap();
    (c, head[1])
}

fn domain(name: &str, port: u16) -> Vec<u8> {
    let mut v = vec![3, u8::try_from(name.len()).unwrap()];
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(&port.to_be_bytes());
    v
}

fn ipv4(addr: SocketAddr) -> Vec<u8> {
    let SocketAddr::V4(a) = addr else { panic!() };
    let mut v = vec![1];
    v.extend_from_slice(&a.ip().octets());
    v.extend_from_slice(&a.port().to_be_bytes());
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_by_name_ipv4_and_ipv6_and_every_refusal() {
    let echo = EchoServer::start("127.0.0.1".parse().unwrap())
        .await
        .unwrap();
    let (p, gate) = proxy().await;
    let route = Admission::Allow(Route::direct(vec![echo.addr()], Decision::allow()));
    gate.answer("echo.test", route.clone());
    gate.answer("127.0.0.1", route.clone());
    gate.answer("::1", route);
    gate.answer(
        "gone.test",
        Admission::Fail(Failure::new(UpstreamFailure::DnsFailed, "NXDOMAIN")),
    );
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    gate.answer(
        "closed.test",
        Admission::Allow(Route::direct(vec![closed], Decision::allow())),
    );

    for addr in [domain("echo.test", 7), ipv4(echo.addr()), {
        let mut v = vec![4];
        v.extend_from_slice(&"::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        v.extend_from_slice(&7u16.to_be_bytes());
        v
    }] {
        let (mut c, rep) = request(p, 1, &addr).await;
        assert_eq!(rep, 0);
        c.write_all(b"through socks").await.unwrap();
        let mut buf = [0u8; 13];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"through socks");
    }
    let seen = gate.seen();
    assert_eq!(seen[0].protocol, proxy_core::Protocol::Socks5Tcp);
    assert_eq!(seen[0].target.to_string(), "echo.test:7");
    assert_eq!(seen[2].target.server_address(), "::1");

    assert_eq!(
        request(p, 1, &domain("evil.test", 443)).await.1,
        0x02,
        "policy refusal"
    );
    assert_eq!(
        request(p, 1, &domain("bad host", 443)).await.1,
        0x02,
        "invalid host"
    );
    let judged = gate.seen().len();
    assert_eq!(
        request(p, 1, &domain("echo.test", 0)).await.1,
        0x02,
        "port 0 by name"
    );
    assert_eq!(
        request(p, 1, &ipv4(SocketAddr::new(echo.addr().ip(), 0)))
            .await
            .1,
        0x02,
        "port 0 by address"
    );
    assert_eq!(gate.seen().len(), judged, "port 0 never reaches the gate");
    assert_eq!(
        request(p, 1, &domain("gone.test", 443)).await.1,
        0x04,
        "unreachable"
    );
    assert_eq!(
        request(p, 1, &domain("closed.test", 1)).await.1,
        0x05,
        "refused"
    );
    assert_eq!(request(p, 2, &domain("echo.test", 7)).await.1, 0x07, "BIND");
    assert_eq!(
        request(p, 3, &domain("echo.test", 7)).await.1,
        0x07,
        "UDP ASSOCIATE"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_truncated_and_slow_clients() {
    let (p, gate) = proxy().await;
    // A bad address type: reply 0x08 (or a closed connection), never a hang.
    let mut c = TcpStream::connect(p).await.unwrap();
    c.write_all(&[5, 1, 0]).await.unwrap();
    let mut m = [0u8; 2];
    c.read_exact(&mut m).await.unwrap();
    c.write_all(&[5, 1, 0, 9, 1, 2, 3, 4, 0, 80]).await.unwrap();
    let mut out = Vec::new();
    // Closed (or reset, since the request was not read to its end) within the timeout.
    let _ = tokio::time::timeout(Duration::from_secs(3), c.read_to_end(&mut out))
        .await
        .unwrap();
    assert!(out.len() < 2 || out[1] == 0x08, "{out:?}");
    // Not SOCKS5 at all.
    let mut c = TcpStream::connect(p).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), c.read_to_end(&mut out))
        .await
        .unwrap();
    // Truncated and slow: closed within 3x the header timeout.
    for bytes in [&[5u8][..], &[5, 1, 0, 5, 1][..]] {
        let mut c = TcpStream::connect(p).await.unwrap();
        c.write_all(bytes).await.unwrap();
        let start = Instant::now();
        let mut out = Vec::new();
        let r = tokio::time::timeout(Duration::from_millis(1500), c.read_to_end(&mut out)).await;
        assert!(r.is_ok(), "open after {:?}", start.elapsed());
    }
    assert!(gate.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_socks_tunnels() {
    const N: usize = 500;
    let echo = EchoServer::start("127.0.0.1".parse().unwrap())
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let p = listener.local_addr().unwrap();
    let gate = Arc::new(StubGate::new());
    gate.answer(
        "echo.test",
        Admission::Allow(Route::direct(vec![echo.addr()], Decision::allow())),
    );
    let limits = Limits {
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(30),
        max_connections: 4096,
        udp: false,
        proxy_auth: None,
        stats: Arc::default(),
        ..Limits::default()
    };
    tokio::spawn(run(
        listener,
        gate,
        Arc::new(RecordingDialer::new()),
        Arc::new(NoInterception),
        limits,
        std::future::pending(),
    ));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..N {
        set.spawn(async move { request(p, 1, &domain("echo.test", 7)).await });
    }
    let mut open = Vec::new();
    while let Some(r) = set.join_next().await {
        let (c, rep) = r.unwrap();
        assert_eq!(rep, 0);
        open.push(c);
    }
    for (i, c) in open.iter_mut().enumerate() {
        let msg = format!("socks {i}");
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

/// A UDP echo server on loopback.
async fn udp_echo() -> SocketAddr {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let _ = sock.send_to(&buf[..n], from).await;
        }
    });
    addr
}

fn udp_datagram(frag: u8, addr: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut d = vec![0, 0, frag];
    d.extend_from_slice(addr);
    d.extend_from_slice(payload);
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_associate_relays_allowed_destinations_and_drops_the_rest() {
    let echo = udp_echo().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let p = listener.local_addr().unwrap();
    let events = audit_events();
    let gate = Arc::new(StubGate::new());
    gate.answer(
        "127.0.0.1",
        Admission::Allow(Route::direct(vec![echo], Decision::allow())),
    );
    gate.answer(
        "echo.test",
        Admission::Allow(Route::direct(vec![echo], Decision::allow())),
    );
    let limits = Limits {
        header_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        max_connections: 64,
        udp: true,
        proxy_auth: None,
        stats: Arc::default(),
        ..Limits::default()
    };
    tokio::spawn(run(
        listener,
        gate.clone(),
        Arc::new(RecordingDialer::new()),
        Arc::new(NoInterception),
        limits,
        std::future::pending(),
    ));

    // UDP ASSOCIATE; the reply names the relay.
    let mut c = TcpStream::connect(p).await.unwrap();
    c.write_all(&[5, 1, 0]).await.unwrap();
    let mut m = [0u8; 2];
    c.read_exact(&mut m).await.unwrap();
    c.write_all(&[5, 3, 0, 1, 0, 0, 0, 0, 0, 0]).await.unwrap();
    let mut reply = [0u8; 10];
    c.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply[1], 0, "{reply:?}");
    assert_eq!(reply[3], 1);
    let relay = SocketAddr::from((
        [reply[4], reply[5], reply[6], reply[7]],
        u16::from_be_bytes([reply[8], reply[9]]),
    ));
    assert!(relay.ip().is_loopback());

    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let roundtrip = |datagram: Vec<u8>| {
        let client = &client;
        async move {
            client.send_to(&datagram, relay).await.unwrap();
            let mut buf = vec![0u8; 2048];
            match tokio::time::timeout(Duration::from_millis(700), client.recv_from(&mut buf)).await
            {
                Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
                _ => None,
            }
        }
    };
    // Allowed, by address.
    let got = roundtrip(udp_datagram(0, &ipv4(echo), b"by address"))
        .await
        .unwrap();
    assert_eq!(&got[..3], &[0, 0, 0]);
    assert!(got.ends_with(b"by address"));
    // Refused: dropped, and the association stays up.
    assert!(
        roundtrip(udp_datagram(0, &domain("evil.test", 53), b"nope"))
            .await
            .is_none()
    );
    // Allowed, by name.
    let got = roundtrip(udp_datagram(
        0,
        &domain("echo.test", echo.port()),
        b"by name",
    ))
    .await
    .unwrap();
    assert!(got.ends_with(b"by name"));
    // Port 0 names no service: dropped before the gate.
    assert!(
        roundtrip(udp_datagram(0, &domain("echo.test", 0), b"port 0"))
            .await
            .is_none()
    );
    // Fragments are dropped.
    assert!(
        roundtrip(udp_datagram(1, &ipv4(echo), b"fragment"))
            .await
            .is_none()
    );
    // Still up after all that.
    assert!(
        roundtrip(udp_datagram(0, &ipv4(echo), b"again"))
            .await
            .unwrap()
            .ends_with(b"again")
    );
    // One gate decision per destination, not per datagram.
    let seen = gate.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(
        seen.iter()
            .all(|m| m.protocol == proxy_core::Protocol::Socks5Udp)
    );

    // Another source is ignored.
    let stranger = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    stranger
        .send_to(&udp_datagram(0, &ipv4(echo), b"stranger"), relay)
        .await
        .unwrap();
    let mut buf = vec![0u8; 256];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), stranger.recv_from(&mut buf))
            .await
            .is_err()
    );

    // The association ends with its TCP connection.
    let me = c.local_addr().unwrap().to_string();
    drop(c);
    let ended = |e: &HashMap<String, String>| e.get("client.address") == Some(&me);
    proxy_test_support::wait_for("the association's end", || {
        let n = events.lock().unwrap().iter().filter(|e| ended(e)).count();
        if n >= 4 { Ok(()) } else { Err(n) }
    });
    assert!(
        roundtrip(udp_datagram(0, &ipv4(echo), b"after close"))
            .await
            .is_none()
    );

    // Then one event per destination sums it up.
    let mut mine: Vec<_> = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| ended(e))
        .cloned()
        .collect();
    mine.sort_by(|a, b| {
        (&a["server.address"], &a["server.port"]).cmp(&(&b["server.address"], &b["server.port"]))
    });
    assert_eq!(mine.len(), 4, "{mine:?}");
    let summary = |e: &HashMap<String, String>| {
        assert_eq!(e["event.name"], proxy_socks::ASSOCIATION_EVENT);
        assert_eq!(e["network.transport.protocol"], "socks5_udp");
        (
            e["server.address"].clone(),
            e["server.port"].clone(),
            e["network.policy.decision"].clone(),
            e["udp.datagrams.sent"].clone(),
            e["udp.datagrams.dropped"].clone(),
            e["udp.datagrams.received"].clone(),
        )
    };
    let port = echo.port().to_string();
    let row = |h: &str, p: &str, d: &str, s: &str, x: &str, r: &str| {
        (h.into(), p.into(), d.into(), s.into(), x.into(), r.into())
    };
    assert_eq!(
        summary(&mine[0]),
        row("127.0.0.1", &port, "allow", "2", "0", "2")
    );
    assert_eq!(
        summary(&mine[1]),
        row("echo.test", "0", "deny", "0", "1", "0")
    );
    assert_eq!(
        summary(&mine[2]),
        row("echo.test", &port, "allow", "1", "0", "1")
    );
    assert_eq!(
        summary(&mine[3]),
        row("evil.test", "53", "deny", "0", "1", "0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_udp_association_ends_and_closes_its_control_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let p = listener.local_addr().unwrap();
    let limits = Limits {
        header_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_millis(300),
        max_connections: 64,
        udp: true,
        proxy_auth: None,
        stats: Arc::default(),
        ..Limits::default()
    };
    tokio::spawn(run(
        listener,
        Arc::new(StubGate::new()),
        Arc::new(RecordingDialer::new()),
        Arc::new(NoInterception),
        limits,
        std::future::pending(),
    ));
    let mut c = TcpStream::connect(p).await.unwrap();
    c.write_all(&[5, 1, 0]).await.unwrap();
    let mut m = [0u8; 2];
    c.read_exact(&mut m).await.unwrap();
    c.write_all(&[5, 3, 0, 1, 0, 0, 0, 0, 0, 0]).await.unwrap();
    let mut reply = [0u8; 10];
    c.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply[1], 0);
    let start = Instant::now();
    let mut rest = Vec::new();
    // idle_timeout is 300 ms; allow 3x.
    let r = tokio::time::timeout(Duration::from_millis(900), c.read_to_end(&mut rest)).await;
    assert!(
        r.is_ok(),
        "the association was still open after {:?}",
        start.elapsed()
    );
}

/// A UDP echo server on loopback that counts the datagrams it received.
async fn counting_udp_echo() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = sock.send_to(&buf[..n], from).await;
        }
    });
    (addr, count)
}

/// A SOCKS front-end with UDP on, over `gate`; returns its address and its stats.
async fn udp_proxy(gate: Arc<StubGate>) -> (SocketAddr, Arc<proxy_io::Stats>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let p = listener.local_addr().unwrap();
    let stats = Arc::new(proxy_io::Stats::default());
    let limits = Limits {
        header_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(30),
        max_connections: 64,
        udp: true,
        proxy_auth: None,
        stats: stats.clone(),
        ..Limits::default()
    };
    tokio::spawn(run(
        listener,
        gate,
        Arc::new(RecordingDialer::new()),
        Arc::new(NoInterception),
        limits,
        std::future::pending(),
    ));
    (p, stats)
}

/// UDP ASSOCIATE declaring `declared` (an IPv4 address and port); returns the control
/// connection and the relay's address.
async fn associate(proxy: SocketAddr, declared: SocketAddr) -> (TcpStream, SocketAddr) {
    let mut c = TcpStream::connect(proxy).await.unwrap();
    c.write_all(&[5, 1, 0]).await.unwrap();
    let mut m = [0u8; 2];
    c.read_exact(&mut m).await.unwrap();
    let mut req = vec![5, 3, 0];
    req.extend_from_slice(&ipv4(declared));
    c.write_all(&req).await.unwrap();
    let mut reply = [0u8; 10];
    c.read_exact(&mut reply).await.unwrap();
    assert_eq!((reply[1], reply[3]), (0, 1), "{reply:?}");
    let relay = SocketAddr::from((
        [reply[4], reply[5], reply[6], reply[7]],
        u16::from_be_bytes([reply[8], reply[9]]),
    ));
    (c, relay)
}

/// Sends `datagram` from `sock` to `relay` and waits a little for an answer.
async fn exchange(
    sock: &tokio::net::UdpSocket,
    relay: SocketAddr,
    datagram: &[u8],
    wait: Duration,
) -> Option<Vec<u8>> {
    sock.send_to(datagram, relay).await.unwrap();
    let mut buf = vec![0u8; 2048];
    match tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_association_belongs_to_the_address_its_client_declared() {
    let (echo, echoed) = counting_udp_echo().await;
    let gate = Arc::new(StubGate::new());
    gate.answer(
        "127.0.0.1",
        Admission::Allow(Route::direct(vec![echo], Decision::allow())),
    );
    let (p, stats) = udp_proxy(gate).await;
    let quiet = Duration::from_millis(400);
    let answer = Duration::from_secs(3);
    let mut foreign = 0;
    // The client declares its address and port, or only its port: another local socket,
    // even one that sends first, is not relayed and does not take the association.
    for full in [true, false] {
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let me = client.local_addr().unwrap();
        let declared = if full {
            me
        } else {
            SocketAddr::from(([0, 0, 0, 0], me.port()))
        };
        let (_control, relay) = associate(p, declared).await;
        let stranger = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let before = echoed.load(std::sync::atomic::Ordering::SeqCst);
        for _ in 0..2 {
            let got = exchange(
                &stranger,
                relay,
                &udp_datagram(0, &ipv4(echo), b"stranger"),
                quiet,
            )
            .await;
            assert!(got.is_none(), "the stranger was relayed: {got:?}");
            foreign += 1;
            let got = exchange(
                &client,
                relay,
                &udp_datagram(0, &ipv4(echo), b"mine"),
                answer,
            )
            .await
            .unwrap();
            assert!(got.ends_with(b"mine"));
        }
        // Only the client's two datagrams reached the destination.
        assert_eq!(echoed.load(std::sync::atomic::Ordering::SeqCst) - before, 2);
        assert_eq!(stats.foreign_datagrams(), foreign);
    }

    // A declared address with port 0 narrows only the address: the first sender from it takes
    // the association, and a second one is foreign.
    let first = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let second = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (_control, relay) = associate(p, "127.0.0.1:0".parse().unwrap()).await;
    let got = exchange(&first, relay, &udp_datagram(0, &ipv4(echo), b"1st"), answer).await;
    assert!(got.unwrap().ends_with(b"1st"));
    let got = exchange(&second, relay, &udp_datagram(0, &ipv4(echo), b"2nd"), quiet).await;
    assert!(got.is_none());
    assert_eq!(stats.foreign_datagrams(), foreign + 1);
    // A declared address that is not the TCP client's: nothing is relayed.
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (_control, relay) = associate(p, "127.0.0.2:0".parse().unwrap()).await;
    let got = exchange(&client, relay, &udp_datagram(0, &ipv4(echo), b"x"), quiet).await;
    assert!(got.is_none());
    assert_eq!(stats.foreign_datagrams(), foreign + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_association_keeps_a_bounded_set_of_verdicts_and_judges_again() {
    let (echo, _) = counting_udp_echo().await;
    let events = audit_events();
    let gate = Arc::new(StubGate::new());
    gate.answer(
        "127.0.0.1",
        Admission::Allow(Route::direct(vec![echo], Decision::allow())),
    );
    let (p, _) = udp_proxy(gate.clone()).await;
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (control, relay) = associate(p, client.local_addr().unwrap()).await;
    let me = control.local_addr().unwrap().to_string();
    let answer = Duration::from_secs(3);
    // The echo answers after every batch: the relay handles datagrams in order, so every
    // refused one before it has been judged by then.
    let sync = || async {
        let got = exchange(
            &client,
            relay,
            &udp_datagram(0, &ipv4(echo), b"sync"),
            answer,
        )
        .await;
        assert!(got.unwrap().ends_with(b"sync"));
    };
    let refused = |i: u16| udp_datagram(0, &domain("refused.test", i + 1), b"x");
    sync().await;
    // One more distinct destination than the association remembers, in batches.
    let n = u16::try_from(proxy_socks::VERDICTS).unwrap() + 1;
    for start in (0..n).step_by(100) {
        for i in start..(start + 100).min(n) {
            client.send_to(&refused(i), relay).await.unwrap();
        }
        sync().await;
    }
    let judged = |port: u16| {
        gate.seen()
            .iter()
            .filter(|m| m.target.server_address() == "refused.test" && m.target.port() == port)
            .count()
    };
    assert_eq!(judged(1), 1);
    // The first destination fell out (the echo's, used after each batch, did not): its counts
    // were reported, and the gate is asked again when it comes back.
    let forgotten = events.lock().unwrap().iter().any(|e| {
        e.get("client.address") == Some(&me)
            && e.get("server.address").map(String::as_str) == Some("refused.test")
            && e.get("server.port").map(String::as_str) == Some("1")
            && e.get("udp.datagrams.dropped").map(String::as_str) == Some("1")
    });
    assert!(forgotten, "no summary for the forgotten destination");
    client.send_to(&refused(0), relay).await.unwrap();
    sync().await;
    assert_eq!(judged(1), 2);
    let echo_judged = gate
        .seen()
        .iter()
        .filter(|m| m.target.server_address() == "127.0.0.1")
        .count();
    assert_eq!(echo_judged, 1, "the destination in use was judged again");
}

/// Without an interceptor, a `CONNECT` the gate routes to intercept is refused (0x02): it
/// never becomes a plain tunnel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_to_intercept_is_refused_without_an_interceptor() {
    let echo = EchoServer::start("127.0.0.1".parse().unwrap())
        .await
        .unwrap();
    let (p, gate) = proxy().await;
    gate.intercept("echo.test", echo.addr());
    let (mut c, rep) = request(p, 1, &domain("echo.test", 443)).await;
    assert_eq!(rep, 0x02);
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), c.read_to_end(&mut rest)).await;
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(echo.connections(), 0, "nothing was dialled");
}

/// A `CONNECT` the gate routes to intercept is dialled, answered with the success reply, then
/// handed to the interceptor with the client's socket and the upstream connection; the
/// interceptor asks the gate to judge a request inside the tunnel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_to_intercept_goes_to_the_interceptor_after_the_reply() {
    let echo = EchoServer::start("127.0.0.1".parse().unwrap())
        .await
        .unwrap();
    let mut greeter = None;
    let (p, gate) = proxy_with(|gate| {
        let g = Arc::new(GreetingInterceptor::new(gate, "hello from inside"));
        greeter = Some(g.clone());
        g
    })
    .await;
    let greeter = greeter.unwrap();
    gate.intercept("echo.test", echo.addr());
    gate.set_mode(Mode::Limited);
    for (line, answer) in [
        ("GET echo.test\n", "hello from inside GET echo.test\n"),
        ("POST echo.test\n", "refused method_not_allowed\n"),
        ("GET other.test\n", "refused not_allowed\n"),
    ] {
        let (mut c, rep) = request(p, 1, &domain("echo.test", 443)).await;
        assert_eq!(rep, 0);
        c.write_all(line.as_bytes()).await.unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(5), c.read_to_string(&mut out))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out, answer);
    }
    let tunnels = greeter.tunnels();
    assert_eq!(tunnels.len(), 3);
    for (meta, route) in &tunnels {
        assert_eq!(meta.protocol, Protocol::Socks5Tcp);
        assert_eq!(meta.target.to_string(), "echo.test:443");
        assert!(route.intercept);
    }
    let inner = gate.inner_seen();
    assert_eq!(inner.len(), 3);
    assert!(inner.iter().all(|(m, _)| m.protocol == Protocol::Https));
    assert_eq!(inner[1].1.reason, Some(Reason::MethodNotAllowed));
}

/// A relay source that records the IPs it is asked for and binds there, keeping each socket's
/// address.
#[derive(Debug, Default)]
struct RecordingRelays {
    asked: Mutex<Vec<std::net::IpAddr>>,
    bound: Mutex<Vec<SocketAddr>>,
}

impl RelaySockets for RecordingRelays {
    fn bind(&self, ip: std::net::IpAddr) -> RelaySocket<'_> {
        self.asked.lock().unwrap().push(ip);
        Box::pin(async move {
            let socket = std::net::UdpSocket::bind((ip, 0))?;
            self.bound.lock().unwrap().push(socket.local_addr()?);
            Ok(socket)
        })
    }
}

/// A relay source that fails, or never answers.
#[derive(Debug)]
struct BrokenRelays {
    hang: bool,
}

impl RelaySockets for BrokenRelays {
    fn bind(&self, _ip: std::net::IpAddr) -> RelaySocket<'_> {
        if self.hang {
            Box::pin(std::future::pending())
        } else {
            Box::pin(std::future::ready(Err(std::io::Error::other(
                "the namespace holder is gone",
            ))))
        }
    }
}

/// A SOCKS front-end with UDP on, listening on `at`, whose relay sockets come from `relays`;
/// returns its address and its task.
async fn proxy_with_relays(
    at: &str,
    gate: Arc<StubGate>,
    relays: Arc<dyn RelaySockets>,
    header_timeout: Duration,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind(at).await.unwrap();
    let p = listener.local_addr().unwrap();
    let limits = Limits {
        header_timeout,
        idle_timeout: Duration::from_secs(30),
        max_connections: 64,
        udp: true,
        proxy_auth: None,
        stats: Arc::default(),
        ..Limits::default()
    };
    let task = tokio::spawn(run_with_relays(
        listener,
        gate,
        Arc::new(RecordingDialer::new()),
        Arc::new(NoInterception),
        limits,
        relays,
        std::future::pending(),
    ));
    (p, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_association_relays_on_the_socket_its_relay_source_gives() {
    let (echo, _) = counting_udp_echo().await;
    let gate = Arc::new(StubGate::new());
    gate.answer(
        "127.0.0.1",
        Admission::Allow(Route::direct(vec![echo], Decision::allow())),
    );
    let relays = Arc::new(RecordingRelays::default());
    // Another loopback address than 127.0.0.1: the source is asked for the listener's.
    let (p, _task) =
        proxy_with_relays("127.0.0.2:0", gate, relays.clone(), Duration::from_secs(5)).await;
    let (c, relay) = associate(p, "0.0.0.0:0".parse().unwrap()).await;
    assert_eq!(*relays.asked.lock().unwrap(), vec![p.ip()]);
    assert_eq!(*relays.bound.lock().unwrap(), vec![relay]);

    let client = tokio::net::UdpSocket::bind((c.local_addr().unwrap().ip(), 0))
        .await
        .unwrap();
    client
        .send_to(&udp_datagram(0, &ipv4(echo), b"via the seam"), relay)
        .await
        .unwrap();
    let mut buf = vec![0u8; 2048];
    let (n, from) = tokio::time::timeout(Duration::from_secs(3), client.recv_from(&mut buf))
        .await
        .expect("no reply through the relay")
        .unwrap();
    assert_eq!(from, relay, "the reply comes from the source's socket");
    assert_eq!(&buf[..3], &[0, 0, 0]);
    assert!(buf[..n].ends_with(b"via the seam"));
    assert_eq!(
        relays.asked.lock().unwrap().len(),
        1,
        "one socket per association"
    );
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_associate_without_a_relay_socket_is_refused_general_failure() {
    for hang in [false, true] {
        // A source that never answers is given up on after the header timeout (300 ms).
        let (p, task) = proxy_with_relays(
            "127.0.0.1:0",
            Arc::new(StubGate::new()),
            Arc::new(BrokenRelays { hang }),
            Duration::from_millis(300),
        )
        .await;
        for _ in 0..2 {
            let (mut c, rep) = tokio::time::timeout(
                Duration::from_secs(3),
                request(p, 3, &ipv4("0.0.0.0:0".parse().unwrap())),
            )
            .await
            .expect("no reply to UDP ASSOCIATE");
            assert_eq!(rep, 0x01, "hang: {hang}");
            // Then the proxy closes the control connection.
            let mut rest = Vec::new();
            let closed =
                tokio::time::timeout(Duration::from_secs(3), c.read_to_end(&mut rest)).await;
            assert!(matches!(closed, Ok(Ok(0))), "hang: {hang}: {closed:?}");
        }
        assert!(!task.is_finished(), "the listener still serves");
    }
}

/// A relay source that hands out a socket that cannot receive datagrams (a bound, unconnected
/// TCP socket, as a broken or hostile source could): every receive on it fails at once.
#[derive(Debug)]
struct WrongSocketRelays;

impl RelaySockets for WrongSocketRelays {
    fn bind(&self, ip: std::net::IpAddr) -> RelaySocket<'_> {
        Box::pin(async move {
            use std::os::fd::AsFd;
            let tcp = tokio::net::TcpSocket::new_v4()?;
            tcp.bind(SocketAddr::new(ip, 0))?;
            let fd = tcp.as_fd().try_clone_to_owned()?;
            Ok(std::net::UdpSocket::from(fd))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_socket_that_fails_for_good_ends_its_association() {
    let (p, _task) = proxy_with_relays(
        "127.0.0.1:0",
        Arc::new(StubGate::new()),
        Arc::new(WrongSocketRelays),
        Duration::from_secs(5),
    )
    .await;
    let (mut c, _relay) = associate(p, "0.0.0.0:0".parse().unwrap()).await;
    // The association ends at once (not after the 30 s idle timeout, spinning on the error
    // meanwhile): the control connection is closed.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0))), "{closed:?}");
}
