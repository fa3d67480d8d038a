//! Revocation (issue 16, item 11) through the real `netproxy serve` process: after an admin
//! change or a reload that no longer allows a target, the open `CONNECT` and SOCKS tunnels,
//! websocket tunnels and kept-alive upstream connections to it are closed, each with an audit
//! event that carries `network.policy.revoked: true` and the new policy's reason; connections
//! the new policy still allows stay open.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use proxy_test_support::{Answer, DnsServer, EchoServer, WsEchoServer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{AdminApi, Serve, datagram, serve, udp_associate, udp_echo, wait_audit};

/// Generous: revocation takes effect when the admin API answers; this only bounds a hang.
const CLOSED_WITHIN: Duration = Duration::from_secs(10);

/// The admin token the config sets.
const TOKEN: &str = "revoke-test-token";

fn audit(s: &Serve) -> PathBuf {
    s.path().join("audit.jsonl")
}

fn api(s: &Serve) -> AdminApi {
    s.api(Some(TOKEN))
}

/// Waits until `n` audit lines with `network.policy.revoked` are written, and returns those.
fn revocations(s: &Serve, n: usize) -> Vec<serde_json::Value> {
    let revoked = |l: &[serde_json::Value]| -> Vec<serde_json::Value> {
        l.iter()
            .filter(|v| v.get("network.policy.revoked").is_some())
            .cloned()
            .collect()
    };
    revoked(&wait_audit(&audit(s), "revocations", |l| {
        revoked(l).len() >= n
    }))
}

/// A TCP echo server on `ip`.
async fn echo_server(ip: Ipv4Addr) -> EchoServer {
    EchoServer::start(IpAddr::V4(ip)).await.unwrap()
}

fn config_text(dir: &Path, treat_as_public: bool) -> String {
    let public = if treat_as_public {
        "treat_as_public = [\"127.0.0.2/32\"]\n"
    } else {
        ""
    };
    format!(
        "[network]\n{public}audit_log = {:?}\nadmin_token = \"{TOKEN}\"\n\
         [network.domains]\n\"127.0.0.1\" = \"allow\"\n\"public.test\" = \"allow\"\n",
        dir.join("audit.jsonl").to_string_lossy()
    )
}

/// `netproxy serve` with HTTP, SOCKS5 and the admin API, the config `config(its folder)` and
/// `env` added.
fn start_with(dns: &DnsServer, config: impl Fn(&Path) -> String, env: &[(&str, &str)]) -> Serve {
    let mut b = serve().dns(dns).socks().admin();
    let text = config(b.path());
    for (k, v) in env {
        b = b.env(k, v);
    }
    b.config(&text).start()
}

fn start(dns: &DnsServer) -> Serve {
    start_with(dns, |dir| config_text(dir, true), &[])
}

/// A `CONNECT` tunnel through the HTTP proxy, established.
async fn connect_tunnel(proxy: &str, authority: &str) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{authority}: {head}");
    s
}

/// A SOCKS5 `CONNECT` (no auth, domain or IPv4 target), established.
async fn socks_tunnel(proxy: &str, target: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut m = [0u8; 2];
    s.read_exact(&mut m).await.unwrap();
    assert_eq!(m, [5, 0]);
    let IpAddr::V4(ip) = target.ip() else {
        panic!("IPv4 only")
    };
    let mut req = vec![5, 1, 0, 1];
    req.extend_from_slice(&ip.octets());
    req.extend_from_slice(&target.port().to_be_bytes());
    s.write_all(&req).await.unwrap();
    let mut rep = [0u8; 10];
    s.read_exact(&mut rep).await.unwrap();
    assert_eq!(rep[1], 0, "SOCKS reply {rep:?}");
    s
}

/// Reads a response head byte by byte (nothing of what follows is consumed).
async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await.unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

async fn echoes(s: &mut TcpStream) -> bool {
    if s.write_all(b"ping").await.is_err() {
        return false;
    }
    let mut b = [0u8; 4];
    matches!(
        tokio::time::timeout(CLOSED_WITHIN, s.read_exact(&mut b)).await,
        Ok(Ok(_))
    ) && &b == b"ping"
}

/// True once the peer closed the connection (EOF or reset) within [`CLOSED_WITHIN`], whatever
/// it still sends meanwhile.
async fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    let eof = async {
        loop {
            match s.read(&mut b).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(CLOSED_WITHIN, eof).await.is_ok()
}

/// A plain HTTP origin that answers every request on a connection with `ok`, keeping it alive,
/// and reports through the channel when the proxy closes its connection.
async fn keepalive_origin() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut lines = BufReader::new(r).lines();
                loop {
                    match lines.next_line().await {
                        Ok(Some(l)) if l.is_empty() => {
                            let resp = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if w.write_all(resp.as_bytes()).await.is_err() {
                                break;
                            }
                        }
                        Ok(Some(_)) => {}
                        _ => break,
                    }
                }
                let _ = tx.send(());
            });
        }
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_narrower_policy_closes_open_connections_and_records_why() {
    let dns = DnsServer::start().await.unwrap();
    let echo = echo_server(Ipv4Addr::LOCALHOST).await;
    let public_echo = echo_server(Ipv4Addr::new(127, 0, 0, 2)).await;
    let ws = WsEchoServer::start(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .await
        .unwrap();
    dns.set(
        "public.test",
        Answer::Addrs(vec![IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))]),
    );
    let (origin, mut origin_closed) = keepalive_origin().await;
    let serve = start(&dns);

    let mut connect = connect_tunnel(&serve.http, &echo.addr().to_string()).await;
    let mut socks = socks_tunnel(serve.socks.as_deref().unwrap(), echo.addr()).await;
    let public_authority = format!("public.test:{}", public_echo.addr().port());
    let mut public = connect_tunnel(&serve.http, &public_authority).await;
    assert!(echoes(&mut connect).await && echoes(&mut socks).await && echoes(&mut public).await);

    // A kept-alive upstream connection: one request answered, the client connection kept.
    let mut client = TcpStream::connect(&serve.http).await.unwrap();
    let get = format!("GET http://{origin}/ HTTP/1.1\r\nHost: {origin}\r\n\r\n");
    client.write_all(get.as_bytes()).await.unwrap();
    let head = read_head(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut body = [0u8; 2];
    client.read_exact(&mut body).await.unwrap();

    // A websocket tunnel, upgraded by hand.
    let mut wsc = TcpStream::connect(&serve.http).await.unwrap();
    let upgrade = format!(
        "GET http://{0}/ HTTP/1.1\r\nHost: {0}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        ws.addr()
    );
    wsc.write_all(upgrade.as_bytes()).await.unwrap();
    let head = read_head(&mut wsc).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");

    // An unrelated change leaves every connection open.
    let (status, body) = api(&serve).post("/domains", r#"{"allow":["other.test"]}"#);
    assert_eq!(status, 200, "{body}");
    assert!(echoes(&mut connect).await && echoes(&mut socks).await && echoes(&mut public).await);
    assert!(origin_closed.try_recv().is_err());

    // Denying 127.0.0.1 closes what goes there, and only that.
    let (status, body) = api(&serve).post("/domains", r#"{"deny":["127.0.0.1"]}"#);
    assert_eq!(status, 200, "{body}");
    assert!(closed(&mut connect).await, "the CONNECT tunnel stayed open");
    assert!(closed(&mut socks).await, "the SOCKS tunnel stayed open");
    assert!(closed(&mut wsc).await, "the websocket tunnel stayed open");
    assert!(
        tokio::time::timeout(CLOSED_WITHIN, origin_closed.recv())
            .await
            .is_ok(),
        "the kept-alive upstream connection stayed open"
    );
    assert!(echoes(&mut public).await, "an allowed tunnel was closed");

    let revoked = revocations(&serve, 4);
    let protocols: Vec<&str> = revoked
        .iter()
        .map(|v| v["network.transport.protocol"].as_str().unwrap())
        .collect();
    for p in ["https_connect", "socks5_tcp", "http"] {
        assert!(protocols.contains(&p), "no revocation for {p}: {revoked:?}");
    }
    for v in &revoked {
        assert_eq!(v["network.policy.revoked"], true);
        assert_eq!(v["network.policy.decision"], "deny");
        assert_eq!(v["network.policy.reason"], "denied", "{v}");
        assert_eq!(v["server.address"], "127.0.0.1");
    }
    let before = revoked.len();

    // A reload that takes 127.0.0.2 out of treat_as_public closes the tunnel to the name that
    // resolved to it, judged on the address it connected to (no new lookup).
    let lookups = dns.queries_for("public.test");
    serve.write_config(&config_text(serve.path(), false));
    let (status, body) = api(&serve).call("POST", "/reload", None);
    assert_eq!(status, 200, "{body}");
    assert!(
        closed(&mut public).await,
        "the tunnel to public.test stayed open"
    );
    assert_eq!(
        dns.queries_for("public.test"),
        lookups,
        "re-judged with a new lookup"
    );
    let revoked = revocations(&serve, before + 1);
    let last = revoked
        .iter()
        .find(|v| v["server.address"] == "public.test")
        .expect("a revocation for public.test");
    assert_eq!(last["network.policy.reason"], "not_allowed_local");
    assert_eq!(last["network.transport.protocol"], "https_connect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_mode_closes_open_tunnels() {
    let dns = DnsServer::start().await.unwrap();
    let echo = echo_server(Ipv4Addr::LOCALHOST).await;
    let serve = start(&dns);
    let mut connect = connect_tunnel(&serve.http, &echo.addr().to_string()).await;
    assert!(echoes(&mut connect).await);
    let (status, body) = api(&serve).post("/mode", r#"{"mode":"limited"}"#);
    assert_eq!(status, 200, "{body}");
    assert!(closed(&mut connect).await, "the CONNECT tunnel stayed open");
    let revoked = revocations(&serve, 1);
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert_eq!(revoked[0]["network.policy.reason"], "mitm_required");
}

/// One datagram to `to` through the relay; its echo's payload, if one comes back in time.
async fn udp_round_trip(
    client: &tokio::net::UdpSocket,
    relay: SocketAddr,
    to: SocketAddr,
    payload: &[u8],
) -> Option<Vec<u8>> {
    client.send_to(&datagram(to, payload), relay).await.unwrap();
    let mut buf = vec![0u8; 2048];
    match tokio::time::timeout(CLOSED_WITHIN, client.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) if n >= 10 => Some(buf[10..n].to_vec()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_narrower_policy_drops_a_udp_associations_verdict() {
    let dns = DnsServer::start().await.unwrap();
    let (echo, received) = udp_echo("127.0.0.1:0").await;
    // Another destination, public.test (still allowed), to show the relay went past a datagram.
    let (public_echo, _) = udp_echo("127.0.0.2:0").await;
    dns.set(
        "public.test",
        Answer::Addrs(vec![IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))]),
    );
    let serve = start(&dns);
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (control, relay) = udp_associate(
        serve.socks.as_deref().unwrap(),
        client.local_addr().unwrap(),
    )
    .await;
    assert_eq!(
        udp_round_trip(&client, relay, echo, b"one").await,
        Some(b"one".to_vec())
    );
    let (status, body) = api(&serve).post("/domains", r#"{"deny":["127.0.0.1"]}"#);
    assert_eq!(status, 200, "{body}");
    // The association stays up, but nothing reaches the refused destination any more: the
    // relay takes datagrams in order, so once the one after it is answered, "two" was judged.
    client
        .send_to(&datagram(echo, b"two"), relay)
        .await
        .unwrap();
    let mut to_public = vec![0, 0, 0, 3, 11];
    to_public.extend_from_slice(b"public.test");
    to_public.extend_from_slice(&public_echo.port().to_be_bytes());
    to_public.extend_from_slice(b"after");
    client.send_to(&to_public, relay).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let (n, _) = tokio::time::timeout(CLOSED_WITHIN, client.recv_from(&mut buf))
        .await
        .expect("the association stayed up")
        .unwrap();
    assert!(buf[..n].ends_with(b"after"), "{:?}", &buf[..n]);
    let revoked = revocations(&serve, 1);
    let udp: Vec<_> = revoked
        .iter()
        .filter(|v| v["network.transport.protocol"] == "socks5_udp")
        .collect();
    assert_eq!(udp.len(), 1, "{revoked:?}");
    assert_eq!(udp[0]["network.policy.reason"], "denied");
    // The association's end counts the refused destination's datagrams: one sent, one dropped.
    drop(control);
    let summary = serve.process.wait_line("the association's summary", |l| {
        l.contains("UDP association ended") && l.contains(&format!("server.port={}", echo.port()))
    });
    assert!(
        summary.contains("udp.datagrams.sent=1") && summary.contains("udp.datagrams.dropped=1"),
        "{summary}"
    );
    assert_eq!(
        received.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "a datagram reached the refused destination"
    );
}

/// A tunnel chained through an upstream proxy is judged by the target's addresses the gate
/// checked, like a direct one: an IP deny entry for them closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_through_an_upstream_proxy_is_judged_by_the_targets_addresses() {
    let dns = DnsServer::start().await.unwrap();
    let echo = echo_server(Ipv4Addr::LOCALHOST).await;
    dns.set(
        "svc.test",
        Answer::Addrs(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]),
    );
    let config = |dir: &Path| {
        format!(
            "[network]\nallow_local_binding = true\naudit_log = {:?}\n\
             admin_token = \"{TOKEN}\"\n[network.domains]\n\"svc.test\" = \"allow\"\n",
            dir.join("audit.jsonl").to_string_lossy()
        )
    };
    let upstream = start_with(&dns, config, &[]);
    let proxy_url = format!("http://{}", upstream.http);
    let serve = start_with(
        &dns,
        config,
        &[
            ("HTTPS_PROXY", proxy_url.as_str()),
            ("HTTP_PROXY", proxy_url.as_str()),
        ],
    );
    let authority = format!("svc.test:{}", echo.addr().port());
    let mut tunnel = connect_tunnel(&serve.http, &authority).await;
    assert!(echoes(&mut tunnel).await);
    // It went through the upstream: the upstream recorded the CONNECT too.
    wait_audit(&audit(&upstream), "the upstream's decision", |l| {
        l.iter().any(|v| v["server.address"] == "svc.test")
    });
    let (status, body) = api(&serve).post("/domains", r#"{"deny":["127.0.0.1"]}"#);
    assert_eq!(status, 200, "{body}");
    assert!(closed(&mut tunnel).await, "the chained tunnel stayed open");
    let revoked = revocations(&serve, 1);
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert_eq!(revoked[0]["network.policy.reason"], "denied");
    assert_eq!(revoked[0]["server.address"], "svc.test");
}

/// A unix socket server whose every exchange streams: a chunked response head, then a chunk
/// every 100 ms until the proxy closes the connection, which the channel reports.
fn streaming_unix_server(path: &Path) -> tokio::sync::mpsc::UnboundedReceiver<()> {
    unix_server(path, true)
}

/// A unix socket server that streams (`streaming_unix_server`) or, without `answer`, reads the
/// request and never answers; the channel reports when the proxy closes a connection.
fn unix_server(path: &Path, answer: bool) -> tokio::sync::mpsc::UnboundedReceiver<()> {
    let listener = tokio::net::UnixListener::bind(path).unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut lines = BufReader::new(r).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    if l.is_empty() {
                        break;
                    }
                }
                if !answer {
                    // Nothing more comes: the read ends when the proxy closes the connection.
                    while let Ok(Some(_)) = lines.next_line().await {}
                    let _ = tx.send(());
                    return;
                }
                let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
                if w.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                while w.write_all(b"5\r\ntick\n\r\n").await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let _ = tx.send(());
            });
        }
    });
    rx
}

/// An `x-unix-socket` exchange through the proxy, its response head and first chunk read.
async fn unix_exchange(proxy: &str, socket: &Path) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let req = format!(
        "GET http://localhost/events HTTP/1.1\r\nHost: localhost\r\nx-unix-socket: {}\r\n\r\n",
        socket.display()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let head = read_head(&mut s).await;
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "{}: {head}",
        socket.display()
    );
    let mut b = [0u8; 16];
    let n = tokio::time::timeout(CLOSED_WITHIN, s.read(&mut b))
        .await
        .unwrap()
        .unwrap();
    assert!(n > 0, "no chunk from {}", socket.display());
    s
}

/// An `x-unix-socket` exchange is held like a tunnel: a reload that no longer allows its
/// socket's entry closes it (both ways) with a revocation event; an exchange with a socket
/// still allowed goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_socket_exchange_is_closed_when_its_socket_is_no_longer_allowed() {
    let dns = DnsServer::start().await.unwrap();
    let sockets = tempfile::tempdir().unwrap();
    let dropped = sockets.path().join("dropped.sock");
    let kept = sockets.path().join("kept.sock");
    let mut dropped_closed = streaming_unix_server(&dropped);
    let mut kept_closed = streaming_unix_server(&kept);
    let config = |dir: &Path, sockets: &[&Path]| {
        let mut text = config_text(dir, true);
        text.push_str("[network.unix_sockets]\n");
        for s in sockets {
            text.push_str(&format!("{:?} = \"allow\"\n", s.display().to_string()));
        }
        text
    };
    let serve = start_with(&dns, |dir| config(dir, &[&dropped, &kept]), &[]);
    let mut to_dropped = unix_exchange(&serve.http, &dropped).await;
    let mut to_kept = unix_exchange(&serve.http, &kept).await;

    // An unrelated change keeps both.
    let (status, body) = api(&serve).post("/domains", r#"{"allow":["unrelated.test"]}"#);
    assert_eq!(status, 200, "{body}");
    assert!(dropped_closed.try_recv().is_err() && kept_closed.try_recv().is_err());

    serve.write_config(&config(serve.path(), &[&kept]));
    let (status, body) = api(&serve).call("POST", "/reload", None);
    assert_eq!(status, 200, "{body}");
    assert!(
        closed(&mut to_dropped).await,
        "the exchange with the socket no longer allowed stayed open"
    );
    assert!(
        tokio::time::timeout(CLOSED_WITHIN, dropped_closed.recv())
            .await
            .is_ok(),
        "the connection to the socket no longer allowed stayed open"
    );
    let revoked = revocations(&serve, 1);
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert_eq!(
        revoked[0]["network.policy.reason"], "not_allowed",
        "{}",
        revoked[0]
    );
    assert_eq!(revoked[0]["network.transport.protocol"], "http");
    assert_eq!(revoked[0]["server.address"], "unix-socket");

    // The other exchange still streams.
    let mut b = [0u8; 64];
    for _ in 0..3 {
        let n = tokio::time::timeout(CLOSED_WITHIN, to_kept.read(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "the exchange with the socket still allowed was closed"
        );
    }
    assert!(kept_closed.try_recv().is_err());
}

/// A unix socket exchange revoked while it waits for its response head is answered 502
/// `upstream_error` saying why, and recorded as the revocation only: no failure is blamed on the
/// socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_socket_exchange_revoked_before_its_head_is_answered_and_not_blamed() {
    let dns = DnsServer::start().await.unwrap();
    let sockets = tempfile::tempdir().unwrap();
    let silent = sockets.path().join("silent.sock");
    let mut silent_closed = unix_server(&silent, false);
    let config = |dir: &Path, allow: bool| {
        let mut text = config_text(dir, true);
        if allow {
            text.push_str(&format!(
                "[network.unix_sockets]\n{:?} = \"allow\"\n",
                silent.display().to_string()
            ));
        }
        text
    };
    let serve = start_with(&dns, |dir| config(dir, true), &[]);
    let mut s = TcpStream::connect(&serve.http).await.unwrap();
    let req = format!(
        "GET http://localhost/wait HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         x-unix-socket: {}\r\n\r\n",
        silent.display()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    // The exchange is admitted (its decision recorded) before the policy changes.
    wait_audit(&audit(&serve), "the exchange's admission", |l| {
        l.iter().any(|v| {
            v["server.address"] == "unix-socket" && v["network.policy.decision"] == "allow"
        })
    });
    serve.write_config(&config(serve.path(), false));
    let (status, body) = api(&serve).call("POST", "/reload", None);
    assert_eq!(status, 200, "{body}");
    let head = tokio::time::timeout(CLOSED_WITHIN, read_head(&mut s))
        .await
        .expect("an answer");
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    assert!(head.contains("upstream_error"), "{head}");
    let mut rest = Vec::new();
    tokio::time::timeout(CLOSED_WITHIN, s.read_to_end(&mut rest))
        .await
        .expect("the answer's end")
        .unwrap();
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("the policy no longer allows it"), "{rest}");
    assert!(
        tokio::time::timeout(CLOSED_WITHIN, silent_closed.recv())
            .await
            .is_ok(),
        "the connection to the socket stayed open"
    );
    let revoked = revocations(&serve, 1);
    assert_eq!(
        revoked[0]["network.policy.reason"], "not_allowed",
        "{}",
        revoked[0]
    );
    let lines = wait_audit(&audit(&serve), "the audit", |_| true);
    let unix: Vec<_> = lines
        .iter()
        .filter(|v| v["server.address"] == "unix-socket")
        .collect();
    assert_eq!(
        unix.len(),
        2,
        "an admission and a revocation only: {unix:?}"
    );
}
