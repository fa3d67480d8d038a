//! Revocation (issue 16, item 11) through the real `netproxy serve` process: after an admin
//! change or a reload that no longer allows a target, the open `CONNECT` and SOCKS tunnels,
//! websocket tunnels and kept-alive upstream connections to it are closed, each with an audit
//! event that carries `network.policy.revoked: true` and the new policy's reason; connections
//! the new policy still allows stay open.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use proxy_test_support::{Answer, DnsServer, EchoServer, WsEchoServer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Generous: revocation takes effect when the admin API answers; this only bounds a hang.
const CLOSED_WITHIN: Duration = Duration::from_secs(10);

struct Serve {
    child: Child,
    http: SocketAddr,
    socks: SocketAddr,
    admin: SocketAddr,
    token: String,
    dir: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn config(&self) -> PathBuf {
        self.dir.path().join("netproxy.toml")
    }

    fn audit(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }

    /// The audit lines with `network.policy.revoked`, parsed.
    fn revocations(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.audit())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v.get("network.policy.revoked").is_some())
            .collect()
    }

    /// Waits until `n` revocations are in the audit file (it is written by a thread).
    fn wait_revocations(&self, n: usize) -> Vec<serde_json::Value> {
        let start = Instant::now();
        loop {
            let r = self.revocations();
            if r.len() >= n || start.elapsed() > CLOSED_WITHIN {
                return r;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    async fn admin(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let mut s = TcpStream::connect(self.admin).await.unwrap();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            self.admin,
            self.token,
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
        (status, body)
    }
}

fn config_text(dir: &Path, treat_as_public: bool) -> String {
    let public = if treat_as_public {
        "treat_as_public = [\"127.0.0.2/32\"]\n"
    } else {
        ""
    };
    format!(
        "[network]\n{public}audit_log = {:?}\nadmin_token = \"revoke-test-token\"\n\
         [network.domains]\n\"127.0.0.1\" = \"allow\"\n\"public.test\" = \"allow\"\n",
        dir.join("audit.jsonl").to_string_lossy()
    )
}

fn start(dns: &DnsServer) -> Serve {
    start_with(dns, |dir| config_text(dir, true), &[])
}

/// `netproxy serve` with the config `config(dir)` and `env` added to an empty environment.
fn start_with(dns: &DnsServer, config: impl Fn(&Path) -> String, env: &[(&str, &str)]) -> Serve {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready.json");
    let cfg = dir.path().join("netproxy.toml");
    std::fs::write(&cfg, config(dir.path())).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_netproxy"))
        .args(["serve", "--http", "127.0.0.1:0", "--socks", "127.0.0.1:0"])
        .args(["--admin", "127.0.0.1:0", "--ready-file"])
        .arg(&ready)
        .arg("--config")
        .arg(&cfg)
        .args(["-c", &format!("dns.nameservers=[\"{}\"]", dns.addr())])
        .env_clear()
        .env("NETPROXY_HOME", dir.path().join("home"))
        .env("NETPROXY_SYSTEM_DIR", dir.path().join("system"))
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let begin = Instant::now();
    while !ready.exists() {
        assert!(begin.elapsed() < Duration::from_secs(10), "not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ready).unwrap()).unwrap();
    let addr = |k: &str| v[k].as_str().unwrap().parse().unwrap();
    Serve {
        http: addr("http"),
        socks: addr("socks"),
        admin: addr("admin"),
        token: "revoke-test-token".into(),
        child,
        dir,
    }
}

/// A `CONNECT` tunnel through the HTTP proxy, established.
async fn connect_tunnel(proxy: SocketAddr, authority: &str) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{authority}: {head}");
    s
}

/// A SOCKS5 `CONNECT` (no auth, domain or IPv4 target), established.
async fn socks_tunnel(proxy: SocketAddr, target: SocketAddr) -> TcpStream {
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

/// True once the peer closed the connection (EOF or reset).
async fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    loop {
        match tokio::time::timeout(CLOSED_WITHIN, s.read(&mut b)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
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
    let echo = EchoServer::start(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .await
        .unwrap();
    let public_echo = EchoServer::start(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .await
        .unwrap();
    let ws = WsEchoServer::start(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .await
        .unwrap();
    dns.set(
        "public.test",
        Answer::Addrs(vec![IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))]),
    );
    let (origin, mut origin_closed) = keepalive_origin().await;
    let serve = start(&dns);

    let mut connect = connect_tunnel(serve.http, &echo.addr().to_string()).await;
    let mut socks = socks_tunnel(serve.socks, echo.addr()).await;
    let public_authority = format!("public.test:{}", public_echo.addr().port());
    let mut public = connect_tunnel(serve.http, &public_authority).await;
    assert!(echoes(&mut connect).await && echoes(&mut socks).await && echoes(&mut public).await);

    // A kept-alive upstream connection: one request answered, the client connection kept.
    let mut client = TcpStream::connect(serve.http).await.unwrap();
    let get = format!("GET http://{origin}/ HTTP/1.1\r\nHost: {origin}\r\n\r\n");
    client.write_all(get.as_bytes()).await.unwrap();
    let head = read_head(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut body = [0u8; 2];
    client.read_exact(&mut body).await.unwrap();

    // A websocket tunnel, upgraded by hand.
    let mut wsc = TcpStream::connect(serve.http).await.unwrap();
    let upgrade = format!(
        "GET http://{0}/ HTTP/1.1\r\nHost: {0}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        ws.addr()
    );
    wsc.write_all(upgrade.as_bytes()).await.unwrap();
    let head = read_head(&mut wsc).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");

    // An unrelated change leaves every connection open.
    let (status, body) = serve
        .admin("POST", "/domains", r#"{"allow":["other.test"]}"#)
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(echoes(&mut connect).await && echoes(&mut socks).await && echoes(&mut public).await);
    assert!(origin_closed.try_recv().is_err());

    // Denying 127.0.0.1 closes what goes there, and only that.
    let (status, body) = serve
        .admin("POST", "/domains", r#"{"deny":["127.0.0.1"]}"#)
        .await;
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

    let revoked = serve.wait_revocations(4);
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
    std::fs::write(serve.config(), config_text(serve.dir.path(), false)).unwrap();
    let (status, body) = serve.admin("POST", "/reload", "").await;
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
    let revoked = serve.wait_revocations(before + 1);
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
    let echo = EchoServer::start(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .await
        .unwrap();
    let serve = start(&dns);
    let mut connect = connect_tunnel(serve.http, &echo.addr().to_string()).await;
    assert!(echoes(&mut connect).await);
    let (status, body) = serve.admin("POST", "/mode", r#"{"mode":"limited"}"#).await;
    assert_eq!(status, 200, "{body}");
    assert!(closed(&mut connect).await, "the CONNECT tunnel stayed open");
    let revoked = serve.wait_revocations(1);
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert_eq!(revoked[0]["network.policy.reason"], "mitm_required");
}

/// A UDP echo server on 127.0.0.1, and the count of datagrams it received.
async fn udp_echo() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
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

/// One datagram to `to` through the relay; its echo's payload, if one comes back in time.
async fn udp_round_trip(
    client: &tokio::net::UdpSocket,
    relay: SocketAddr,
    to: SocketAddr,
    payload: &[u8],
    wait: Duration,
) -> Option<Vec<u8>> {
    let IpAddr::V4(ip) = to.ip() else {
        panic!("IPv4 only")
    };
    let mut d = vec![0, 0, 0, 1];
    d.extend_from_slice(&ip.octets());
    d.extend_from_slice(&to.port().to_be_bytes());
    d.extend_from_slice(payload);
    client.send_to(&d, relay).await.unwrap();
    let mut buf = vec![0u8; 2048];
    match tokio::time::timeout(wait, client.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) if n >= 10 => Some(buf[10..n].to_vec()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_narrower_policy_drops_a_udp_associations_verdict() {
    let dns = DnsServer::start().await.unwrap();
    let (echo, received) = udp_echo().await;
    let serve = start(&dns);
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut control = TcpStream::connect(serve.socks).await.unwrap();
    control.write_all(&[5, 1, 0]).await.unwrap();
    let mut m = [0u8; 2];
    control.read_exact(&mut m).await.unwrap();
    let port = client.local_addr().unwrap().port().to_be_bytes();
    control
        .write_all(&[5, 3, 0, 1, 127, 0, 0, 1, port[0], port[1]])
        .await
        .unwrap();
    let mut rep = [0u8; 10];
    control.read_exact(&mut rep).await.unwrap();
    assert_eq!(rep[1], 0, "UDP ASSOCIATE refused: {rep:?}");
    let relay = SocketAddr::from((
        Ipv4Addr::new(rep[4], rep[5], rep[6], rep[7]),
        u16::from_be_bytes([rep[8], rep[9]]),
    ));
    let relay = if relay.ip().is_unspecified() {
        SocketAddr::from((Ipv4Addr::LOCALHOST, relay.port()))
    } else {
        relay
    };
    assert_eq!(
        udp_round_trip(&client, relay, echo, b"one", CLOSED_WITHIN).await,
        Some(b"one".to_vec())
    );
    let (status, body) = serve
        .admin("POST", "/domains", r#"{"deny":["127.0.0.1"]}"#)
        .await;
    assert_eq!(status, 200, "{body}");
    // The association stays up, but nothing reaches the refused destination any more.
    assert_eq!(
        udp_round_trip(&client, relay, echo, b"two", Duration::from_secs(2)).await,
        None
    );
    assert_eq!(
        received.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "a datagram reached the refused destination"
    );
    let revoked = serve.wait_revocations(1);
    let udp: Vec<_> = revoked
        .iter()
        .filter(|v| v["network.transport.protocol"] == "socks5_udp")
        .collect();
    assert_eq!(udp.len(), 1, "{revoked:?}");
    assert_eq!(udp[0]["network.policy.reason"], "denied");
    drop(control);
}

/// A tunnel chained through an upstream proxy is judged by the target's addresses the gate
/// checked, like a direct one: an IP deny entry for them closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_through_an_upstream_proxy_is_judged_by_the_targets_addresses() {
    let dns = DnsServer::start().await.unwrap();
    let echo = EchoServer::start(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .await
        .unwrap();
    dns.set(
        "svc.test",
        Answer::Addrs(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]),
    );
    let config = |dir: &Path| {
        format!(
            "[network]\nallow_local_binding = true\naudit_log = {:?}\n\
             admin_token = \"revoke-test-token\"\n[network.domains]\n\"svc.test\" = \"allow\"\n",
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
    let mut tunnel = connect_tunnel(serve.http, &authority).await;
    assert!(echoes(&mut tunnel).await);
    // It went through the upstream: the upstream recorded the CONNECT too.
    let begin = Instant::now();
    loop {
        let upstream_saw = std::fs::read_to_string(upstream.audit()).unwrap_or_default();
        if upstream_saw.contains("\"svc.test\"") {
            break;
        }
        assert!(
            begin.elapsed() < CLOSED_WITHIN,
            "not through the upstream: {upstream_saw}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, body) = serve
        .admin("POST", "/domains", r#"{"deny":["127.0.0.1"]}"#)
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(closed(&mut tunnel).await, "the chained tunnel stayed open");
    let revoked = serve.wait_revocations(1);
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert_eq!(revoked[0]["network.policy.reason"], "denied");
    assert_eq!(revoked[0]["server.address"], "svc.test");
}
