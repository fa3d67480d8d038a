//! The SOCKS5 front-end of the real `netproxy serve` process: curl by name and by address, UDP
//! by name through the real gate, and a UDP association flooded with refused destinations; and
//! a service started in this process whose UDP relay sockets come from a source it was given.

use std::net::SocketAddr;

use proxy_test_support::{Curl, DnsServer};

use crate::support::{World, datagram, reply, resolves, serve, udp_associate, udp_echo};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks5_with_curl_by_name_and_by_address() {
    let w = World::new(&["api.test"]).await;
    let s = w
        .serve()
        .socks()
        .args(&[
            "--allow",
            "*.test",
            "--allow",
            "127.0.0.2",
            "--deny",
            "evil.test",
        ])
        .start();
    let socks = s.socks.clone().unwrap();
    let get = |flag: &str, url: String| Curl::new().args([flag, &socks]).get(url);
    // socks5h: the name goes to netproxy, which judges and resolves it.
    let r = get("--socks5-hostname", w.url("api.test", "by-name"));
    assert_eq!(r.status, 200, "{}", r.text());
    // socks5 with an address: judged as that address.
    let r = get("--socks5", w.url("127.0.0.2", "by-address"));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get("--socks5-hostname", w.url("evil.test", ""));
    assert_eq!(r.status, 0);
    assert_eq!(w.origin.seen().len(), 2);
    assert_eq!(w.dns.queries_for("evil.test"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks5_udp_by_name_through_the_real_gate() {
    let dns = DnsServer::start().await.unwrap();
    let (echo, _) = udp_echo("127.0.0.2:0").await;
    // Where a datagram for local.test would go, were it let through: it would come back.
    let (_, local_got) = udp_echo(&format!("127.0.0.1:{}", echo.port())).await;
    resolves(&dns, "udp.test", "127.0.0.2");
    resolves(&dns, "local.test", "127.0.0.1");
    let s = serve()
        .dns(&dns)
        .public()
        .socks()
        .args(&["--allow", "*.test"])
        .start();
    let (_control, relay) =
        udp_associate(s.socks.as_deref().unwrap(), "0.0.0.0:0".parse().unwrap()).await;
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let send = |name: &str, payload: &[u8]| {
        let mut d = vec![0, 0, 0, 3, u8::try_from(name.len()).unwrap()];
        d.extend_from_slice(name.as_bytes());
        d.extend_from_slice(&echo.port().to_be_bytes());
        d.extend_from_slice(payload);
        d
    };
    client
        .send_to(&send("udp.test", b"hello udp"), relay)
        .await
        .unwrap();
    assert!(reply(&client).await.ends_with(b"hello udp"));
    // A name that resolves locally is refused and dropped; the association stays up. The
    // relay handles datagrams in order: the next answer is the one to the datagram after.
    client
        .send_to(&send("local.test", b"no"), relay)
        .await
        .unwrap();
    client
        .send_to(&send("udp.test", b"again"), relay)
        .await
        .unwrap();
    let again = reply(&client).await;
    assert!(again.ends_with(b"again"), "{again:?}");
    assert_eq!(local_got.load(std::sync::atomic::Ordering::SeqCst), 0);
    // Resolved once per association and destination.
    assert!(dns.queries_for("udp.test") <= 2, "{:?}", dns.queries());
}

/// netproxy's resident memory, from /proc.
fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_association_flooded_with_refused_destinations_stays_small() {
    let dns = DnsServer::start().await.unwrap();
    let (echo, _) = udp_echo("127.0.0.1:0").await;
    // Only the echo is allowed: every other loopback destination is refused by policy
    // (not_allowed_local), so nothing is sent on.
    let s = serve()
        .dns(&dns)
        .socks()
        .args(&["--allow", "127.0.0.1"])
        .start();
    let (c, relay) = udp_associate(s.socks.as_deref().unwrap(), "0.0.0.0:0".parse().unwrap()).await;
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // Distinct refused destinations: 127.0.0.3 on every port, then 127.x.y.z addresses.
    let refused = |i: u32| {
        let to = if i < 65_000 {
            SocketAddr::from(([127, 0, 0, 3], u16::try_from(i + 1).unwrap()))
        } else {
            let [_, x, y, z] = (i - 65_000 + (1 << 16)).to_be_bytes();
            SocketAddr::from(([127, x, y, z], 9))
        };
        datagram(to, b"x")
    };
    // Batches small enough for the relay's receive buffer, each followed by an echo round
    // trip: the relay handles datagrams in order, so the batch has been judged by then.
    let flood = async |from: u32, to: u32| {
        for start in (from..to).step_by(100) {
            for i in start..(start + 100).min(to) {
                client.send_to(&refused(i), relay).await.unwrap();
            }
            client.send_to(&datagram(echo, b"x"), relay).await.unwrap();
            assert!(reply(&client).await.ends_with(b"x"));
        }
    };
    let pid = s.process.id();
    // Warm-up: the verdict table full, the allocator and the log buffers in use.
    flood(0, 20_000).await;
    let before = vm_rss_kib(pid);
    flood(20_000, 320_000).await;
    let after = vm_rss_kib(pid);
    let grown = after.saturating_sub(before);
    assert!(
        grown < 32 * 1024,
        "300,000 refused destinations grew netproxy by {grown} KiB ({before} -> {after} KiB)"
    );
    drop(c);
}

/// A relay source that records the IPs it is asked for and binds there.
#[derive(Debug, Default)]
struct RecordingRelays(std::sync::Mutex<Vec<std::net::IpAddr>>);

impl proxy_socks::RelaySockets for RecordingRelays {
    fn bind(&self, ip: std::net::IpAddr) -> proxy_socks::RelaySocket<'_> {
        self.0.lock().unwrap().push(ip);
        Box::pin(std::future::ready(std::net::UdpSocket::bind((ip, 0))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_service_takes_its_udp_relay_sockets_from_the_source_it_was_given() {
    let (echo, _) = udp_echo("127.0.0.1:0").await;
    let dir = tempfile::tempdir().unwrap();
    let sources = proxy_config::Sources {
        system_dir: Some(dir.path().into()),
        home_dir: Some(dir.path().into()),
        system_requirements: Some(dir.path().join("requirements.toml")),
        cli: proxy_config::CliOverrides {
            allow: vec!["127.0.0.1".into()],
            ..Default::default()
        },
        ..Default::default()
    };
    let relays = std::sync::Arc::new(RecordingRelays::default());
    let service = netproxy::Service::new(sources, |_| None)
        .unwrap()
        .with_relay_sockets(relays.clone());
    let running = netproxy::start(
        std::sync::Arc::new(service),
        netproxy::Options {
            http: netproxy::Listen::Addr("127.0.0.1:0".parse().unwrap()),
            socks: Some(netproxy::Listen::Addr("127.0.0.1:0".parse().unwrap())),
            admin: None,
            watch_files: false,
        },
    )
    .await
    .unwrap();
    let socks = running.socks.unwrap();
    let (control, relay) = udp_associate(&socks.to_string(), "0.0.0.0:0".parse().unwrap()).await;
    assert_eq!(*relays.0.lock().unwrap(), vec![socks.ip()]);
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client
        .send_to(&datagram(echo, b"through the source"), relay)
        .await
        .unwrap();
    assert!(reply(&client).await.ends_with(b"through the source"));
    drop(control);
    running.shutdown();
    running.drain().await;
}
