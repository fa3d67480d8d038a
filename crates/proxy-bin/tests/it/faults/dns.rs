//! A DNS server that times out, answers SERVFAIL, truncates its answer over UDP, or answers with
//! a CNAME chain that ends at a local address: `502 dns_failed` (SOCKS5 REP `0x04`) within three
//! DNS timeouts with a failure event, the lookup over TCP, a refusal `not_allowed_local` with
//! nothing dialled; and the name works once the server does, without a restart.

use std::time::{Duration, Instant};

use proxy_test_support::{Answer, EchoServer};

use super::{audit_log, connect, failure_event, socks_connect, thrice};
use crate::support::{World, resolves, serve, wait_audit_line};

/// The DNS timeout of the first test: long enough that three of it bound the answer even on a
/// busy machine.
const DNS_TIMEOUT: Duration = Duration::from_millis(1000);

/// A server that does not answer, and one that answers SERVFAIL: the plain request gets `502
/// dns_failed` naming what happened, the SOCKS5 `CONNECT` REP `0x04` (host unreachable), each
/// within three DNS timeouts; each is one `dns_failed` event. When the server answers again,
/// the same name works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_server_that_times_out_or_fails() {
    let w = World::new(&["api.test"]).await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let s = serve()
        .public()
        .socks()
        .args(&[
            "-c",
            &format!("dns.nameservers=[\"{}\"]", w.dns.addr()),
            "-c",
            &format!("dns.timeout_ms={}", DNS_TIMEOUT.as_millis()),
            "--allow",
            "*.test",
        ])
        .args(&audit_log(&audit))
        .start();
    let socks = s.socks.clone().unwrap();
    let port = w.origin.addr().port();
    for (name, answer, message) in [
        (
            "silent.test",
            Answer::Drop,
            "no DNS server answered for silent.test within 1000 ms",
        ),
        (
            "broken.test",
            Answer::ServFail,
            "the DNS server could not answer for broken.test (SERVFAIL)",
        ),
    ] {
        w.dns.set(name, answer);
        let begin = Instant::now();
        let r = s.get(&w.url(name, ""));
        assert!(
            begin.elapsed() < thrice(DNS_TIMEOUT),
            "{name}: {:?}",
            begin.elapsed()
        );
        assert_eq!(r.status, 502, "{name}: {}", r.text());
        assert!(
            r.text().contains("\"reason\":\"dns_failed\""),
            "{}",
            r.text()
        );
        assert!(r.text().contains(message), "{}", r.text());

        let begin = Instant::now();
        let (_, head) = connect(&s.http, &format!("{name}:{port}")).await;
        assert!(
            begin.elapsed() < thrice(DNS_TIMEOUT),
            "{name}: {:?}",
            begin.elapsed()
        );
        assert!(head.starts_with("HTTP/1.1 502"), "{name}: {head}");

        let begin = Instant::now();
        let (_, rep) = socks_connect(&socks, name, port).await;
        assert!(
            begin.elapsed() < thrice(DNS_TIMEOUT),
            "{name}: {:?}",
            begin.elapsed()
        );
        assert_eq!(rep, 4, "{name}");

        for protocol in ["http", "https_connect", "socks5_tcp"] {
            let e = failure_event(&audit, protocol, name, "dns_failed");
            assert_eq!(e["network.policy.decision"], "allow", "{e}");
        }

        // The server recovers: the same name works, with no restart.
        resolves(&w.dns, name, "127.0.0.2");
        let r = s.get(&w.url(name, "back"));
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        let (_, rep) = socks_connect(&socks, name, port).await;
        assert_eq!(rep, 0, "{name}");
    }
    let stderr = s.stop();
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// An answer too large for a datagram: the server sets TC over UDP, netproxy asks again over
/// TCP and the request goes through (plain, `CONNECT` and SOCKS5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_dns_answer_is_asked_again_over_tcp() {
    let w = World::new(&["api.test"]).await;
    w.dns.set(
        "big.test",
        Answer::Truncated(vec!["127.0.0.2".parse().unwrap()]),
    );
    let s = w.serve().socks().args(&["--allow", "*.test"]).start();
    let r = s.get(&w.url("big.test", "truncated"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        w.dns.tcp_queries_for("big.test") >= 1,
        "{:?}",
        w.dns.queries()
    );
    let port = w.origin.addr().port();
    let (_, head) = connect(&s.http, &format!("big.test:{port}")).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (_, rep) = socks_connect(s.socks.as_deref().unwrap(), "big.test", port).await;
    assert_eq!(rep, 0);
    assert_eq!(w.origin.seen().len(), 1);
    s.stop();
}

/// A CNAME chain from an allowed name to a local address (127.0.0.1, or `localhost` with
/// 127.0.0.1 and ::1): refused `not_allowed_local` over plain HTTP, `CONNECT` (403) and SOCKS5
/// (REP `0x02`), and the local listener never sees a connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cname_chain_to_a_local_address_is_refused_and_never_dialled() {
    let w = World::new(&["api.test"]).await;
    let local = EchoServer::start("127.0.0.1".parse().unwrap())
        .await
        .unwrap();
    let port = local.addr().port();
    w.dns.set("alias.test", Answer::Cname("hop.test".into()));
    w.dns.set("hop.test", Answer::Cname("inner.test".into()));
    resolves(&w.dns, "inner.test", "127.0.0.1");
    w.dns.set("home.test", Answer::Cname("localhost".into()));
    w.dns.set(
        "localhost",
        Answer::Addrs(vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()]),
    );
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let s = w
        .serve()
        .socks()
        .args(&["--allow", "*.test"])
        .args(&audit_log(&audit))
        .start();
    for name in ["alias.test", "home.test"] {
        let r = s.get(&format!("http://{name}:{port}/"));
        assert_eq!(r.status, 403, "{name}: {}", r.text());
        assert!(
            r.text().contains("\"reason\":\"not_allowed_local\""),
            "{name}: {}",
            r.text()
        );
        let (_, head) = connect(&s.http, &format!("{name}:{port}")).await;
        assert!(head.starts_with("HTTP/1.1 403"), "{name}: {head}");
        let (_, rep) = socks_connect(s.socks.as_deref().unwrap(), name, port).await;
        assert_eq!(rep, 2, "{name}");
        for protocol in ["http", "https_connect", "socks5_tcp"] {
            wait_audit_line(&audit, &format!("{name} refused over {protocol}"), |l| {
                l["server.address"] == name
                    && l["network.transport.protocol"] == protocol
                    && l["network.policy.reason"] == "not_allowed_local"
            });
        }
    }
    assert!(
        w.dns.queries_for("alias.test") >= 1,
        "{:?}",
        w.dns.queries()
    );
    assert_eq!(local.connections(), 0);
    // Still serving.
    assert_eq!(s.get(&w.url("api.test", "")).status, 200);
    s.stop();
}
