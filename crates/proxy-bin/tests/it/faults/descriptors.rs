//! The descriptor limit reached: netproxy runs under `prlimit --nofile=64:64` and clients open
//! tunnels until it cannot accept. The open tunnels keep working, new connections are refused
//! (reset at once, with the descriptor netproxy holds in reserve for this; a dial that finds no
//! descriptor is a `502`), one warning says so for the whole episode, and when tunnels close new
//! clients are served again and one line says so, with the count refused.

use std::time::Duration;

use proxy_test_support::EchoServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{bounded, open_fds, read_head};
use crate::support::serve;

/// netproxy's descriptor limit here: about 17 are its own at rest, so some 20 tunnels fit.
const NOFILE: usize = 64;

const EPISODE: &str = "cannot accept connections";
const RECOVERED: &str = "accepting connections again";

/// True when `t` echoes a line.
async fn echoes(t: &mut TcpStream) -> bool {
    if t.write_all(b"ping\n").await.is_err() {
        return false;
    }
    let mut b = [0u8; 5];
    bounded("an echo", t.read_exact(&mut b)).await.is_ok() && &b == b"ping\n"
}

/// A `CONNECT` whose connection may be refused: `None` when netproxy reset or closed it before
/// any response (the connect or the write may meet the reset), within the test's bound.
async fn try_connect(proxy: &str, authority: &str) -> Option<(TcpStream, String)> {
    let mut s = match TcpStream::connect(proxy).await {
        Ok(s) => s,
        Err(e) => {
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
            return None;
        }
    };
    let req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return None;
    }
    let head = read_head(&mut s).await;
    (!head.is_empty()).then_some((s, head))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_descriptor_limit_open_tunnels_go_on_new_clients_are_refused_then_served_again() {
    let echo = EchoServer::start("127.0.0.2".parse().unwrap())
        .await
        .unwrap();
    let authority = format!("echo.test:{}", echo.addr().port());
    // A static address: no lookup needs a socket. A long head timeout: a connection answered
    // 502 stays open (and holds its descriptor) for the whole episode.
    let s = serve()
        .args(&[
            "-c",
            "limits.header_timeout_ms=60000",
            "--allow",
            "echo.test",
            "-c",
            "dns.hosts={\"echo.test\"=[\"127.0.0.2\"]}",
            "-c",
            "treat_as_public=[\"127.0.0.2/32\"]",
        ])
        .wrap(vec![
            "prlimit".into(),
            format!("--nofile={NOFILE}:{NOFILE}"),
        ])
        .start();
    let pid = s.process.id();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(&format!(" {NOFILE} "))),
        "{limits}"
    );

    // Tunnels until a connection is refused; a CONNECT whose dial found no descriptor is
    // answered 502 and kept open (closing it would give its descriptor to the next dial).
    let mut tunnels = Vec::new();
    let mut answered_502 = Vec::new();
    loop {
        assert!(
            tunnels.len() + answered_502.len() < NOFILE,
            "never ran out of descriptors"
        );
        let Some((t, head)) = try_connect(&s.http, &authority).await else {
            break;
        };
        if head.starts_with("HTTP/1.1 200") {
            tunnels.push(t);
        } else {
            assert!(
                head.starts_with("HTTP/1.1 502") && head.contains("connect_failed"),
                "{head}"
            );
            answered_502.push(t);
        }
    }
    assert!(tunnels.len() >= 10, "{} tunnels", tunnels.len());
    assert!(
        answered_502.len() <= 1,
        "{} answered 502",
        answered_502.len()
    );
    assert!(open_fds(pid) >= NOFILE - 1, "{}", open_fds(pid));
    s.process.wait_line("the episode", |l| l.contains(EPISODE));

    // The episode: the open tunnels work, each new client is refused at once (the bound is
    // the test's patience, far below the episode's length), and no line is logged per attempt.
    for t in &mut tunnels {
        assert!(echoes(t).await);
    }
    for _ in 0..3 {
        assert!(try_connect(&s.http, &authority).await.is_none());
    }
    // A client that closes one tunnel and opens two, again and again: served, refused, and all
    // within the one episode (no pair of log lines each time).
    for _ in 0..5 {
        drop(tunnels.pop());
        let (t, head) = bounded("a tunnel in the freed descriptors", async {
            loop {
                if let Some(served) = try_connect(&s.http, &authority).await {
                    break served;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        tunnels.push(t);
        assert!(try_connect(&s.http, &authority).await.is_none());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for t in tunnels.iter_mut().take(3) {
        assert!(echoes(t).await);
    }
    let log = s.process.stderr();
    assert_eq!(log.matches(EPISODE).count(), 1, "{log}");
    let line = log.lines().find(|l| l.contains(EPISODE)).unwrap();
    assert!(
        line.contains("WARN") && line.contains("Too many open files"),
        "{line}"
    );
    assert!(!log.contains(RECOVERED), "{log}");

    // Descriptors free up: new clients are served again, once said, with the count refused,
    // a quiet second after the last failure (with no other client needed).
    assert!(try_connect(&s.http, &authority).await.is_none());
    drop(answered_502);
    let freed = tunnels.split_off(tunnels.len() - 6);
    drop(freed);
    let served = bounded("a client served after the episode", async {
        loop {
            if let Some((t, head)) = try_connect(&s.http, &authority).await {
                break (t, head);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let (mut t, head) = served;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(echoes(&mut t).await);
    let line = s
        .process
        .wait_line("the recovery", |l| l.contains(RECOVERED));
    let field = |name: &str| -> u64 {
        line.split(&format!("{name}="))
            .nth(1)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {line}"))
    };
    assert!(field("refused") >= 4, "{line}");
    assert!(field("failed_attempts") >= field("refused"), "{line}");
    for t in &mut tunnels {
        assert!(echoes(t).await);
    }
    drop(tunnels);
    drop(t);
    let log = s.stop();
    assert_eq!(log.matches(EPISODE).count(), 1, "{log}");
    assert_eq!(log.matches(RECOVERED).count(), 1, "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// netproxy's own `Max open files` limits, soft and hard.
fn nofile(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut v = line["Max open files".len()..].split_whitespace();
    (v.next().unwrap().to_owned(), v.next().unwrap().to_owned())
}

/// `serve` raises its soft descriptor limit to the hard one, and warns only when the hard one
/// is short of what full listeners may hold (`max_connections` each for HTTP, two descriptors
/// a connection, and SOCKS5, four with UDP; the admin API's 64; 32 besides).
#[test]
fn serve_raises_its_soft_descriptor_limit_and_warns_when_max_connections_cannot_fit() {
    const SHORT: &str = "the open-descriptor limit is below what full listeners may hold";

    let s = serve()
        .args(&["-c", "limits.max_connections=100"])
        .wrap(vec!["prlimit".into(), "--nofile=128:1024".into()])
        .start();
    assert_eq!(nofile(s.process.id()), ("1024".into(), "1024".into()));
    let log = s.stop();
    assert!(!log.contains(SHORT), "{log}");

    // The default max_connections: 4,096 connections for HTTP, two descriptors each, and as
    // many again for SOCKS5 with UDP, four each; 32 besides.
    let s = serve()
        .socks()
        .wrap(vec!["prlimit".into(), "--nofile=256:4096".into()])
        .start();
    assert_eq!(nofile(s.process.id()), ("4096".into(), "4096".into()));
    let log = s.stop();
    let line = log
        .lines()
        .find(|l| l.contains(SHORT))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        line.contains("WARN")
            && line.contains("limit=4096")
            && line.contains("needed=24608")
            && line.contains("max_connections=4096"),
        "{line}"
    );
}
