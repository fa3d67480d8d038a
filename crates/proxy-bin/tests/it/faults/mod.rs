//! Faults, each an end-to-end test through real sockets against the real `netproxy serve`
//! (docs/faults.md): a DNS server that times out, fails, truncates or points at a local address
//! ([`dns`]); an upstream that resets, stalls or closes early ([`upstream`]); an OTLP collector
//! that is down, slow or failing ([`audit`]); the descriptor limit ([`descriptors`]), ten
//! thousand clients at once ([`crowd`]) and a client that reads nothing ([`backpressure`]).
//! Each checks the documented answer, the event or log line, that nothing hangs (every wait is
//! bounded, generously) and that netproxy recovers without a restart.

mod audit;
#[cfg(target_os = "linux")]
mod backpressure;
#[cfg(target_os = "linux")]
mod crowd;
#[cfg(target_os = "linux")]
mod descriptors;
mod dns;
mod upstream;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use proxy_test_support::PATIENCE;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::wait_audit_line;

/// `-c audit_log=PATH`.
pub(crate) fn audit_log(path: &Path) -> [String; 2] {
    [
        "-c".into(),
        format!("audit_log={:?}", path.display().to_string()),
    ]
}

/// Waits for the audit log's failure event (`error.type` = `kind`) about `host` over
/// `protocol`, and returns it.
pub(crate) fn failure_event(
    audit: &Path,
    protocol: &str,
    host: &str,
    kind: &str,
) -> serde_json::Value {
    wait_audit_line(audit, &format!("a {kind} event for {host}"), |l| {
        l["error.type"] == kind
            && l["server.address"] == host
            && l["network.transport.protocol"] == protocol
    })
}

/// The audit log's failure events (any kind) about `host`.
pub(crate) fn failures_of(audit: &Path, host: &str) -> Vec<serde_json::Value> {
    crate::support::audit_lines(audit)
        .into_iter()
        .filter(|l| l["server.address"] == host && !l["error.type"].is_null())
        .collect()
}

/// `fut`, or a test failure naming `what` after [`PATIENCE`]: no wait in these tests is
/// unbounded.
pub(crate) async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("hung: {what}"))
}

/// Reads a response head byte by byte (nothing of what follows is consumed); what came before
/// the connection closed, if it closed first.
pub(crate) async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    bounded("a response head", async {
        while !head.ends_with(b"\r\n\r\n") {
            match s.read(&mut b).await {
                Ok(1) => head.push(b[0]),
                _ => break,
            }
        }
    })
    .await;
    String::from_utf8_lossy(&head).into_owned()
}

/// A `CONNECT authority` through the HTTP proxy at `proxy`: the connection and the response
/// head.
pub(crate) async fn connect(proxy: &str, authority: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let head = read_head(&mut s).await;
    (s, head)
}

/// A SOCKS5 `CONNECT` (no authentication) to `host:port` by name (address type 3): the
/// connection and the reply code (REP).
pub(crate) async fn socks_connect(proxy: &str, host: &str, port: u16) -> (TcpStream, u8) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut m = [0u8; 2];
    bounded("the SOCKS method", s.read_exact(&mut m))
        .await
        .unwrap();
    assert_eq!(m, [5, 0]);
    let mut req = vec![5, 1, 0, 3, u8::try_from(host.len()).unwrap()];
    req.extend_from_slice(host.as_bytes());
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).await.unwrap();
    let mut rep = [0u8; 10];
    bounded("the SOCKS reply", s.read_exact(&mut rep))
        .await
        .unwrap();
    (s, rep[1])
}

/// One plain HTTP request through the proxy on `s` (a connection kept alive): the status and
/// the body (read by its `content-length`).
pub(crate) async fn exchange(s: &mut TcpStream, url: &str) -> (u16, String) {
    let host = url
        .strip_prefix("http://")
        .and_then(|r| r.split('/').next())
        .unwrap();
    let req = format!("GET {url} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let (head, body) = read_response(s).await;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status: {head:?}"));
    (status, body)
}

/// The `content-length` of a message head, if it has one.
pub(crate) fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })
}

/// The head and body of the response on `s`, its body as long as its `content-length`.
pub(crate) async fn read_response(s: &mut TcpStream) -> (String, String) {
    let head = read_head(s).await;
    let len = content_length(&head).unwrap_or_else(|| panic!("no content-length: {head:?}"));
    let mut body = vec![0u8; len];
    bounded("a response body", s.read_exact(&mut body))
        .await
        .unwrap();
    (head, String::from_utf8_lossy(&body).into_owned())
}

/// How a read from a connection ended once the peer was done with it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// A clean end of stream, after these bytes.
    Eof(usize),
    /// An error (a reset, most often), after these bytes.
    Error(std::io::ErrorKind, usize),
}

/// Reads `s` until it ends (bounded), counting the bytes.
pub(crate) async fn read_to_end<S: AsyncRead + Unpin>(s: &mut S) -> Ended {
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0;
    loop {
        match bounded("the connection to end", s.read(&mut buf)).await {
            Ok(0) => return Ended::Eof(n),
            Ok(k) => n += k,
            Err(e) => return Ended::Error(e.kind(), n),
        }
    }
}

/// netproxy's resident memory in KiB (`VmRSS` of /proc/PID/status).
#[cfg(target_os = "linux")]
pub(crate) fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// How many descriptors process `pid` has open.
#[cfg(target_os = "linux")]
pub(crate) fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// A listener's address that nothing listens on any more (bound, then closed): a collector or
/// origin that is down. The port may be taken again later by this test.
pub(crate) fn vacant_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Three times `configured`: the bound a test gives netproxy to answer after a fault.
pub(crate) fn thrice(configured: Duration) -> Duration {
    configured * 3
}
