//! The descriptor limit reached: netproxy runs under `prlimit --nofile=64:64` and clients open
//! tunnels until it cannot accept. The open tunnels keep working, new connections wait in the
//! backlog (a dial that finds no descriptor is a `502`), one warning says so for the whole
//! episode, and when tunnels close the waiting clients are served and one line says so.

use std::time::Duration;

use proxy_test_support::{EchoServer, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{bounded, connect, open_fds};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_descriptor_limit_open_tunnels_go_on_new_clients_wait_and_are_served_later() {
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

    // Tunnels until an accept fails; a CONNECT whose dial found no descriptor is answered 502
    // and kept open (closing it would give its descriptor to the next dial).
    let mut tunnels = Vec::new();
    let mut refused = Vec::new();
    let waiting = loop {
        assert!(
            tunnels.len() + refused.len() < NOFILE,
            "never ran out of descriptors"
        );
        let proxy = s.http.clone();
        let a = authority.clone();
        let attempt = tokio::spawn(async move { connect(&proxy, &a).await });
        wait_for("a CONNECT answered, or the accept failing", || {
            if attempt.is_finished() || s.process.stderr().contains(EPISODE) {
                Ok(())
            } else {
                Err(s.process.stderr())
            }
        });
        if !attempt.is_finished() {
            break attempt;
        }
        let (t, head) = attempt.await.unwrap();
        if head.starts_with("HTTP/1.1 200") {
            tunnels.push(t);
        } else {
            assert!(
                head.starts_with("HTTP/1.1 502") && head.contains("connect_failed"),
                "{head}"
            );
            refused.push(t);
        }
    };
    assert!(tunnels.len() >= 10, "{} tunnels", tunnels.len());
    assert!(refused.len() <= 1, "{} refused", refused.len());
    assert!(open_fds(pid) >= NOFILE - 1, "{}", open_fds(pid));

    // The episode: the open tunnels work, more clients wait with the first, and the accept
    // loop keeps trying (with back-off) without a line per attempt.
    for t in &mut tunnels {
        assert!(echoes(t).await);
    }
    let more: Vec<_> = (0..3)
        .map(|_| {
            let proxy = s.http.clone();
            let a = authority.clone();
            tokio::spawn(async move { connect(&proxy, &a).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!waiting.is_finished());
    assert!(more.iter().all(|m| !m.is_finished()));
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

    // Descriptors free up: the waiting clients are accepted and served, once said.
    drop(refused);
    let freed = tunnels.split_off(tunnels.len() - 6);
    drop(freed);
    for attempt in std::iter::once(waiting).chain(more) {
        let (mut t, head) = bounded("a waiting client served", attempt).await.unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(echoes(&mut t).await);
    }
    let line = s
        .process
        .wait_line("the recovery", |l| l.contains(RECOVERED));
    let attempts: u64 = line
        .split("failed_attempts=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(attempts >= 3, "{line}");
    for t in &mut tunnels {
        assert!(echoes(t).await);
    }
    drop(tunnels);
    let log = s.stop();
    assert_eq!(log.matches(EPISODE).count(), 1, "{log}");
    assert_eq!(log.matches(RECOVERED).count(), 1, "{log}");
    assert!(!log.contains("panicked"), "{log}");
}
