//! An upstream that resets mid-response or mid-tunnel, accepts then stalls, or closes before
//! its response head: the client gets the documented answer (docs/responses.md, docs/faults.md),
//! netproxy records the failure where there is one, and the next request works, to the same
//! origin once it is healthy again, without a restart.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use super::{
    Ended, audit_log, bounded, connect, content_length, exchange, failure_event, failures_of,
    read_head, read_response, read_to_end, socks_connect, thrice,
};
use crate::support::{Serve, World, wait_audit_line};

/// What the faulty origin does with each connection, once it has read a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Answers `200` with `ok`, and the next request on the connection the same way.
    Healthy,
    /// Sends a head promising [`PROMISED`] bytes and [`SENT`] of them, waits for
    /// [`Faulty::cut`], then resets the connection.
    Reset,
    /// Sends nothing, and holds the connection until the other side closes it.
    Stall,
    /// Sends a head promising [`PROMISED`] bytes and [`SENT`] of them, then nothing more,
    /// holding the connection until the other side closes it.
    StallMidBody,
    /// Closes the connection (FIN) without a byte.
    Close,
}

/// The body length the resetting origin announces.
const PROMISED: usize = 1 << 20;
/// What it sends of it before the reset.
const SENT: usize = 16 * 1024;

/// A plain TCP origin on 127.0.0.2 speaking just enough HTTP/1.1 to fail in one of the ways of
/// [`Fault`], switchable while it runs. Dropping it stops it.
struct Faulty {
    addr: SocketAddr,
    fault: Arc<Mutex<Fault>>,
    cut: Arc<Notify>,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Faulty {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Faulty {
    async fn start(fault: Fault) -> Self {
        let listener = TcpListener::bind("127.0.0.2:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fault = Arc::new(Mutex::new(fault));
        let cut = Arc::new(Notify::new());
        let accepted = Arc::new(AtomicUsize::new(0));
        let (f, c, a) = (fault.clone(), cut.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(s, f.clone(), c.clone()));
            }
        });
        Self {
            addr,
            fault,
            cut,
            accepted,
            task,
        }
    }

    fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }

    /// Lets a [`Fault::Reset`] connection reset now.
    fn cut(&self) {
        self.cut.notify_one();
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }
}

/// Reads one request head from `s`; false when the connection ended first.
async fn request_head(s: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b).await {
            Ok(1) => head.push(b[0]),
            _ => return false,
        }
    }
    true
}

async fn serve(mut s: TcpStream, fault: Arc<Mutex<Fault>>, cut: Arc<Notify>) {
    while request_head(&mut s).await {
        let now = *fault.lock().unwrap();
        match now {
            Fault::Healthy => {
                let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                if s.write_all(ok.as_bytes()).await.is_err() {
                    return;
                }
            }
            Fault::Reset => {
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {PROMISED}\r\n\r\n");
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&vec![b'x'; SENT]).await;
                cut.notified().await;
                s.set_zero_linger().unwrap();
                return;
            }
            Fault::Stall | Fault::StallMidBody => {
                if now == Fault::StallMidBody {
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {PROMISED}\r\n\r\n");
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(&vec![b'x'; SENT]).await;
                }
                let mut sink = [0u8; 1024];
                while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
                return;
            }
            Fault::Close => return,
        }
    }
}

/// `netproxy serve` allowing `*.test` (api.test and fault.test resolve to 127.0.0.2, public),
/// with SOCKS5, an audit log in `dir`, and an idle timeout (the upstream response timeout) of
/// one second.
fn start(w: &World, dir: &std::path::Path) -> Serve {
    w.serve()
        .socks()
        .args(&["--allow", "*.test", "-c", "limits.idle_timeout_s=1"])
        .args(&audit_log(&dir.join("audit.jsonl")))
        .start()
}

const IDLE: Duration = Duration::from_secs(1);

/// A request of `GET /` for fault.test sent inside a tunnel.
async fn get_inside(s: &mut TcpStream, port: u16) {
    let req = format!("GET / HTTP/1.1\r\nHost: fault.test:{port}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
}

/// Reads the response head and the [`SENT`] bytes that follow it, lets the origin reset, and
/// reads on: how the connection ended.
async fn cut_short(s: &mut TcpStream, origin: &Faulty) -> (String, Ended) {
    let head = read_head(s).await;
    let mut first = vec![0u8; SENT];
    bounded("the body's first bytes", s.read_exact(&mut first))
        .await
        .unwrap();
    origin.cut();
    let end = read_to_end(s).await;
    (head, end)
}

/// The next requests work: plain, `CONNECT` and SOCKS5 to fault.test once it is healthy again
/// (on new connections), and to api.test.
async fn recovers(s: &Serve, w: &World, origin: &Faulty) {
    origin.set(Fault::Healthy);
    let port = origin.port();
    let mut c = TcpStream::connect(&s.http).await.unwrap();
    assert_eq!(
        exchange(&mut c, &format!("http://fault.test:{port}/")).await,
        (200, "ok".into())
    );
    assert_eq!(exchange(&mut c, &w.url("api.test", "again")).await.0, 200);
    let (mut t, head) = connect(&s.http, &format!("fault.test:{port}")).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    get_inside(&mut t, port).await;
    assert!(read_head(&mut t).await.starts_with("HTTP/1.1 200"));
    let (mut t, rep) = socks_connect(s.socks.as_deref().unwrap(), "fault.test", port).await;
    assert_eq!(rep, 0);
    get_inside(&mut t, port).await;
    assert!(read_head(&mut t).await.starts_with("HTTP/1.1 200"));
}

/// Stops netproxy: it exits 0 and never panicked.
fn stop_clean(s: Serve) {
    let stderr = s.stop();
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// An origin that resets after part of its body: the plain HTTP client gets the head and the
/// bytes sent, then its connection closes short of the announced length (a truncation it
/// detects), and netproxy records an `upstream_error` failure. In a `CONNECT` or SOCKS5 tunnel
/// the client's connection is reset in turn: never a clean end of stream, which would pass the
/// cut stream off as whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_resets_mid_response_or_mid_tunnel() {
    let w = World::new(&["api.test", "fault.test"]).await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let s = start(&w, dir.path());
    let origin = Faulty::start(Fault::Reset).await;
    let port = origin.port();

    let mut c = TcpStream::connect(&s.http).await.unwrap();
    let req =
        format!("GET http://fault.test:{port}/big HTTP/1.1\r\nHost: fault.test:{port}\r\n\r\n");
    c.write_all(req.as_bytes()).await.unwrap();
    let (head, end) = cut_short(&mut c, &origin).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains(&format!("content-length: {PROMISED}")),
        "{head}"
    );
    match end {
        Ended::Eof(n) | Ended::Error(_, n) => assert!(SENT + n < PROMISED, "{end:?}"),
    }
    let event = failure_event(&audit, "http", "fault.test", "upstream_error");
    assert_eq!(event["network.policy.decision"], "allow", "{event}");

    for socks in [false, true] {
        let (mut t, ok) = if socks {
            let (t, rep) = socks_connect(s.socks.as_deref().unwrap(), "fault.test", port).await;
            (t, rep == 0)
        } else {
            let (t, head) = connect(&s.http, &format!("fault.test:{port}")).await;
            (t, head.starts_with("HTTP/1.1 200"))
        };
        assert!(ok, "socks {socks}");
        get_inside(&mut t, port).await;
        let (head, end) = cut_short(&mut t, &origin).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            matches!(end, Ended::Error(std::io::ErrorKind::ConnectionReset, 0)),
            "socks {socks}: {end:?}"
        );
    }
    // A tunnel is opaque: its reset is passed on, not recorded as a failure.
    assert_eq!(failures_of(&audit, "fault.test").len(), 1);

    recovers(&s, &w, &origin).await;
    stop_clean(s);
}

/// An origin that accepts and never answers: a plain request gets `504 upstream_timeout`
/// within three idle timeouts and the failure is recorded; a tunnel to it is closed when idle
/// for the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_accepts_then_stalls() {
    let w = World::new(&["api.test", "fault.test"]).await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let s = start(&w, dir.path());
    let origin = Faulty::start(Fault::Stall).await;
    let port = origin.port();

    let begin = Instant::now();
    let mut c = TcpStream::connect(&s.http).await.unwrap();
    let (status, body) = exchange(&mut c, &format!("http://fault.test:{port}/")).await;
    assert!(begin.elapsed() < thrice(IDLE), "{:?}", begin.elapsed());
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("\"reason\":\"upstream_timeout\""), "{body}");
    assert!(body.contains("sent no response head within 1 s"), "{body}");
    failure_event(&audit, "http", "fault.test", "upstream_timeout");
    // The client's connection is still good.
    assert_eq!(exchange(&mut c, &w.url("api.test", "")).await.0, 200);

    for socks in [false, true] {
        let (mut t, ok) = if socks {
            let (t, rep) = socks_connect(s.socks.as_deref().unwrap(), "fault.test", port).await;
            (t, rep == 0)
        } else {
            let (t, head) = connect(&s.http, &format!("fault.test:{port}")).await;
            (t, head.starts_with("HTTP/1.1 200"))
        };
        assert!(ok, "socks {socks}");
        get_inside(&mut t, port).await;
        let begin = Instant::now();
        assert_eq!(read_to_end(&mut t).await, Ended::Eof(0), "socks {socks}");
        assert!(begin.elapsed() < thrice(IDLE), "{:?}", begin.elapsed());
    }
    recovers(&s, &w, &origin).await;
    stop_clean(s);
}

/// An origin that closes before its response head: a plain request gets `502 upstream_error`
/// and the failure is recorded; a tunnel relays the close (an end of stream, as the origin
/// sent it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_closes_before_the_response_head() {
    let w = World::new(&["api.test", "fault.test"]).await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let s = start(&w, dir.path());
    let origin = Faulty::start(Fault::Close).await;
    let port = origin.port();

    let mut c = TcpStream::connect(&s.http).await.unwrap();
    let (status, body) = exchange(&mut c, &format!("http://fault.test:{port}/")).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("\"reason\":\"upstream_error\""), "{body}");
    let event = failure_event(&audit, "http", "fault.test", "upstream_error");
    assert_eq!(event["http.request.method"], "GET", "{event}");
    assert_eq!(exchange(&mut c, &w.url("api.test", "")).await.0, 200);

    let (mut t, head) = connect(&s.http, &format!("fault.test:{port}")).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    get_inside(&mut t, port).await;
    assert_eq!(read_to_end(&mut t).await, Ended::Eof(0));
    let (mut t, rep) = socks_connect(s.socks.as_deref().unwrap(), "fault.test", port).await;
    assert_eq!(rep, 0);
    get_inside(&mut t, port).await;
    assert_eq!(read_to_end(&mut t).await, Ended::Eof(0));
    assert!(origin.accepted.load(Ordering::SeqCst) >= 3);

    recovers(&s, &w, &origin).await;
    // The allowed requests were recorded as such, and only the plain one as failed.
    wait_audit_line(&audit, "the SOCKS5 tunnel's allow", |l| {
        l["network.transport.protocol"] == "socks5_tcp" && l["server.address"] == "fault.test"
    });
    assert_eq!(failures_of(&audit, "fault.test").len(), 1);
    stop_clean(s);
}

/// An origin that sends its head and part of its body, then nothing: the plain HTTP client's
/// connection is closed short of the announced length once no byte came for the idle timeout
/// (within three), and the failure is recorded as `upstream_timeout`; a tunnel is closed when
/// idle for the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_stalls_mid_body() {
    let w = World::new(&["api.test", "fault.test"]).await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let s = start(&w, dir.path());
    let origin = Faulty::start(Fault::StallMidBody).await;
    let port = origin.port();

    let mut c = TcpStream::connect(&s.http).await.unwrap();
    let req =
        format!("GET http://fault.test:{port}/big HTTP/1.1\r\nHost: fault.test:{port}\r\n\r\n");
    c.write_all(req.as_bytes()).await.unwrap();
    let head = read_head(&mut c).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let begin = Instant::now();
    match read_to_end(&mut c).await {
        Ended::Eof(n) | Ended::Error(_, n) => assert_eq!(n, SENT),
    }
    assert!(begin.elapsed() < thrice(IDLE), "{:?}", begin.elapsed());
    let event = failure_event(&audit, "http", "fault.test", "upstream_timeout");
    assert_eq!(event["network.policy.decision"], "allow", "{event}");

    for socks in [false, true] {
        let (mut t, ok) = if socks {
            let (t, rep) = socks_connect(s.socks.as_deref().unwrap(), "fault.test", port).await;
            (t, rep == 0)
        } else {
            let (t, head) = connect(&s.http, &format!("fault.test:{port}")).await;
            (t, head.starts_with("HTTP/1.1 200"))
        };
        assert!(ok, "socks {socks}");
        get_inside(&mut t, port).await;
        let head = read_head(&mut t).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let begin = Instant::now();
        assert_eq!(read_to_end(&mut t).await, Ended::Eof(SENT), "socks {socks}");
        assert!(begin.elapsed() < thrice(IDLE), "{:?}", begin.elapsed());
    }
    assert_eq!(failures_of(&audit, "fault.test").len(), 1);
    recovers(&s, &w, &origin).await;
    stop_clean(s);
}

/// The response-head timeout counts from the request's last byte: a body that takes four idle
/// timeouts to upload, a chunk every 0.4 of one, is answered by the origin that read it all; a
/// client that stops in the middle of its body gets `504 upstream_timeout` within three idle
/// timeouts of its last byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_is_no_timeout_but_a_stalled_one_is() {
    const CHUNKS: usize = 10;
    const CHUNK: usize = 1000;
    let w = World::new(&["api.test", "fault.test"]).await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let s = start(&w, dir.path());
    // An origin that reads a request and its whole body, then answers the body's length.
    let listener = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let origin = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let head = read_head(&mut s).await;
                let Some(len) = content_length(&head) else {
                    return;
                };
                let mut body = vec![0u8; len];
                if s.read_exact(&mut body).await.is_ok() {
                    let n = len.to_string();
                    let answer =
                        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{n}", n.len());
                    let _ = s.write_all(answer.as_bytes()).await;
                }
            });
        }
    });
    let post = |len: usize| {
        format!(
            "POST http://fault.test:{port}/up HTTP/1.1\r\nHost: fault.test:{port}\r\n\
             content-length: {len}\r\n\r\n"
        )
    };

    let mut c = TcpStream::connect(&s.http).await.unwrap();
    c.write_all(post(CHUNKS * CHUNK).as_bytes()).await.unwrap();
    for _ in 0..CHUNKS {
        tokio::time::sleep(IDLE * 2 / 5).await;
        c.write_all(&[b'u'; CHUNK]).await.unwrap();
    }
    let (head, body) = read_response(&mut c).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, (CHUNKS * CHUNK).to_string());

    let mut c = TcpStream::connect(&s.http).await.unwrap();
    c.write_all(post(100).as_bytes()).await.unwrap();
    c.write_all(&[b'u'; 10]).await.unwrap();
    let last_byte = Instant::now();
    let (head, body) = read_response(&mut c).await;
    assert!(
        last_byte.elapsed() < thrice(IDLE),
        "{:?}",
        last_byte.elapsed()
    );
    assert!(head.starts_with("HTTP/1.1 504"), "{head}");
    assert!(body.contains("\"reason\":\"upstream_timeout\""), "{body}");
    assert!(
        body.contains("no response head within 1 s of the request's last byte"),
        "{body}"
    );
    failure_event(&audit, "http", "fault.test", "upstream_timeout");
    origin.abort();
    stop_clean(s);
}
