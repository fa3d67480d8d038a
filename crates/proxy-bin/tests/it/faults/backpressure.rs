//! A client that reads nothing while the origin streams 256 MiB, over plain HTTP and through a
//! `CONNECT` tunnel: netproxy takes only what its buffers hold, so the origin ends up blocked in
//! its writes with most of the body unsent, netproxy's memory does not grow by more than a few
//! MiB, and when the client reads at last every byte arrives, intact and in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proxy_test_support::wait_for;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{bounded, connect, read_head, rss_kib};
use crate::support::{World, resolves};

/// The body the origin tries to send.
const TOTAL: u64 = 256 << 20;
/// The most netproxy's resident memory may grow while the body is held up: a few MiB (its
/// own buffers are 64 KiB a direction; hyper's are below 1 MiB), against the 256 MiB it would
/// take to buffer the body.
const GROWTH_KIB: u64 = 8 * 1024;

/// The largest read or write of the body.
const CHUNK: usize = 256 * 1024;

/// The body is `0, 1, ..., 250` over and over: a lost, repeated or reordered chunk breaks it.
/// `CHUNK` bytes of it from `offset`.
fn pattern_at(offset: u64) -> &'static [u8] {
    static PATTERN: std::sync::LazyLock<Vec<u8>> =
        std::sync::LazyLock::new(|| (0..CHUNK + 251).map(|i| (i % 251) as u8).collect());
    let start = usize::try_from(offset % 251).unwrap();
    &PATTERN[start..start + CHUNK]
}

/// An origin on 127.0.0.2 that answers each request head with a `TOTAL`-byte body, counting
/// what its writes have handed to the kernel.
async fn streaming_origin() -> (u16, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let written = Arc::new(AtomicU64::new(0));
    let w = written.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let w = w.clone();
            tokio::spawn(async move {
                let _ = read_head(&mut s).await;
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {TOTAL}\r\n\r\n");
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let mut offset = 0u64;
                while offset < TOTAL {
                    let chunk = &pattern_at(offset)[..64 * 1024];
                    if s.write_all(chunk).await.is_err() {
                        return;
                    }
                    offset += chunk.len() as u64;
                    w.store(offset, Ordering::SeqCst);
                }
            });
        }
    });
    (port, written)
}

/// Waits until the origin's writes have stopped (the same count on three looks 300 ms apart,
/// with some bytes sent): it is blocked on a full connection. Returns the count.
fn blocked(written: &AtomicU64) -> u64 {
    let mut last = (0, 0);
    wait_for("the origin blocked in its writes", || {
        std::thread::sleep(Duration::from_millis(300));
        let now = written.load(Ordering::SeqCst);
        if now > 0 && now == last.0 {
            last.1 += 1;
        } else {
            last = (now, 0);
        }
        if last.1 >= 2 {
            Ok(now)
        } else {
            Err(format!("{now} bytes written"))
        }
    })
}

/// Reads the rest of a `TOTAL`-byte body from `s` and checks every byte.
async fn whole_body(s: &mut TcpStream) {
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    while offset < TOTAL {
        let n = bounded("the body", s.read(&mut buf)).await.unwrap();
        assert!(n > 0, "the body ended at {offset} of {TOTAL}");
        assert!(
            buf[..n] == pattern_at(offset)[..n],
            "the body differs within {n} bytes from {offset}"
        );
        offset += n as u64;
    }
    assert_eq!(offset, TOTAL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_holds_the_origin_back_not_netproxys_memory() {
    let w = World::new(&["api.test"]).await;
    resolves(&w.dns, "stream.test", "127.0.0.2");
    // The idle timeout also bounds a write the client does not take: long enough here.
    let s = w
        .serve()
        .args(&["--allow", "*.test", "-c", "limits.idle_timeout_s=120"])
        .start();
    let pid = s.process.id();
    // Warm up both paths, so that their code and first buffers are in before the baseline.
    assert_eq!(s.get(&w.url("api.test", "bytes/1000000")).status, 200);
    let r = s.curl().arg("-p").get(w.url("api.test", "bytes/1000000"));
    assert_eq!(r.status, 200);

    for tunnel in [false, true] {
        let (port, written) = streaming_origin().await;
        let before = rss_kib(pid);
        let mut c = if tunnel {
            let (mut t, head) = connect(&s.http, &format!("stream.test:{port}")).await;
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            let req = format!("GET /big HTTP/1.1\r\nHost: stream.test:{port}\r\n\r\n");
            t.write_all(req.as_bytes()).await.unwrap();
            t
        } else {
            let mut c = TcpStream::connect(&s.http).await.unwrap();
            let req = format!(
                "GET http://stream.test:{port}/big HTTP/1.1\r\nHost: stream.test:{port}\r\n\r\n"
            );
            c.write_all(req.as_bytes()).await.unwrap();
            c
        };
        let stuck = blocked(&written);
        assert!(
            stuck < TOTAL / 4,
            "tunnel {tunnel}: {stuck} of {TOTAL} bytes left the origin"
        );
        let grown = rss_kib(pid).saturating_sub(before);
        assert!(
            grown < GROWTH_KIB,
            "tunnel {tunnel}: netproxy grew by {grown} KiB holding {stuck} bytes"
        );
        eprintln!("tunnel {tunnel}: origin blocked after {stuck} bytes; netproxy grew {grown} KiB");

        let head = read_head(&mut c).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains(&format!("content-length: {TOTAL}")), "{head}");
        whole_body(&mut c).await;
        assert_eq!(written.load(Ordering::SeqCst), TOTAL);
    }
    s.stop();
}
