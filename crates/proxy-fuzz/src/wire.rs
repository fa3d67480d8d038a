//! The wire harness the `http_wire` and `socks_wire` targets share: a real front-end serves one
//! connection ([`proxy_http::serve_stream`], [`proxy_socks::serve_stream`]) whose client is a
//! script of bytes, written in chunks with pauses between them over an in-memory duplex
//! stream, in a current-thread runtime whose clock is paused (it jumps to the next timer
//! whenever every task waits, so timeouts cost nothing). The gate is proxy-test-support's
//! [`StubGate`] with one answer for every target; the dialer (`Upstreams`) never touches
//! the network: it refuses, or hands back one end of another duplex stream whose other end an
//! origin of a few lines serves; the interceptor (`Greeter`) answers one line and closes.
//!
//! What the harness checks for every input (`Outcome` gives the rest to the target):
//! - nothing panics, in the connection's task or in any task it spawned (a panic hook counts
//!   them, `panics`);
//! - the connection and every task it started end within a bound of virtual time that the
//!   target derives from the configured timeouts and the client's own pauses.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use proxy_core::{
    Admission, Decision, Dialer, Failure, Intercepted, Interceptor, Reason, RequestMeta, Route,
    UpstreamFailure, Via,
};
use proxy_test_support::StubGate;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use crate::input::Input;

/// The size of each in-memory stream's buffer in each direction (a socket's, roughly).
const BUFFER: usize = 64 * 1024;

/// How many bytes of what the server wrote are kept for the target to read (the rest is only
/// counted).
const KEEP: usize = 4096;

/// The address a route leads to: never dialled, the dialer hands back a duplex stream.
pub(crate) const ORIGIN: &str = "127.0.0.1:9";

/// Panics seen since the process started, in any thread or task (a hook counts them, then
/// calls the previous hook).
pub(crate) fn panics() -> usize {
    static HOOK: Once = Once::new();
    static PANICS: AtomicUsize = AtomicUsize::new(0);
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
    PANICS.load(Ordering::SeqCst)
}

/// The pauses a client makes before a chunk (virtual time).
const PAUSES: &[Duration] = &[
    Duration::ZERO,
    Duration::ZERO,
    Duration::ZERO,
    Duration::from_millis(1),
    Duration::from_millis(300),
    Duration::from_secs(2),
    Duration::from_secs(7),
    Duration::from_secs(40),
];

/// How a client sends its bytes: cut into chunks, a pause before each, then it closes its
/// sending side or keeps it open (and reads until the server closes).
#[derive(Debug, Clone)]
pub(crate) struct Pacing {
    /// Where each chunk ends, as a fraction of the bytes (0 to 255 of 255), and the pause
    /// before it.
    cuts: Vec<(u8, Duration)>,
    /// Whether the client shuts down its sending side after its last byte.
    close: bool,
}

impl Pacing {
    /// Read from the input: up to five chunks.
    pub(crate) fn read(input: &mut Input<'_>) -> Self {
        let cuts = (0..=input.below(5))
            .map(|_| (input.byte(), input.pick(PAUSES)))
            .collect();
        Self {
            cuts,
            close: input.below(4) != 0,
        }
    }

    /// The chunks of `bytes` with their pauses (the last chunk takes what is left).
    fn chunks(&self, bytes: &[u8]) -> Vec<(Duration, Vec<u8>)> {
        let mut ends: Vec<usize> = self
            .cuts
            .iter()
            .map(|(f, _)| bytes.len() * usize::from(*f) / 255)
            .collect();
        ends.sort_unstable();
        if let Some(last) = ends.last_mut() {
            *last = bytes.len();
        }
        let mut start = 0;
        ends.iter()
            .zip(&self.cuts)
            .map(|(end, (_, pause))| {
                let chunk = bytes[start..*end].to_vec();
                start = *end;
                (*pause, chunk)
            })
            .collect()
    }

    /// The client's own time: the sum of its pauses.
    pub(crate) fn time(&self) -> Duration {
        self.cuts.iter().map(|(_, p)| *p).sum()
    }
}

/// What the gate answers for every target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Refused (`not_allowed`).
    Deny,
    /// Refused by the mode (`method_not_allowed`).
    DenyMethod,
    /// Allowed, directly.
    Allow,
    /// Allowed, to be intercepted.
    Intercept,
    /// Allowed, an opaque tunnel whose ClientHello the gate judges (`verify_sni`).
    VerifySni,
    /// Allowed through an upstream proxy, plain requests in absolute form.
    Upstream,
    /// The target could not be checked.
    Fail(UpstreamFailure),
}

impl Verdict {
    pub(crate) fn read(input: &mut Input<'_>) -> Self {
        match input.below(9) {
            0 => Self::Deny,
            1 => Self::DenyMethod,
            2 | 3 => Self::Allow,
            4 => Self::Intercept,
            5 => Self::VerifySni,
            6 => Self::Upstream,
            7 => Self::Fail(UpstreamFailure::DnsFailed),
            _ => Self::Fail(UpstreamFailure::UpstreamTimeout),
        }
    }

    /// Whether the gate admits anything.
    pub(crate) fn admits(self) -> bool {
        matches!(
            self,
            Self::Allow | Self::Intercept | Self::VerifySni | Self::Upstream
        )
    }

    /// A stub gate answering this for every target.
    pub(crate) fn gate(self) -> StubGate {
        let gate = StubGate::new();
        let origin: SocketAddr = ORIGIN.parse().unwrap_or_else(|e| panic!("{e}"));
        let route = || Route::direct(vec![origin], Decision::allow());
        let answer = match self {
            Self::Deny => Admission::Deny(Decision::deny(Reason::NotAllowed)),
            Self::DenyMethod => Admission::Deny(Decision::deny(Reason::MethodNotAllowed)),
            Self::Allow => Admission::Allow(route()),
            Self::Intercept => {
                let mut r = route();
                r.intercept = true;
                Admission::Allow(r)
            }
            Self::VerifySni => {
                let mut r = route();
                r.verify_sni = true;
                Admission::Allow(r)
            }
            Self::Upstream => {
                let mut r = route();
                r.via = Via::UpstreamProxy {
                    proxy: vec![origin],
                    authority: "a.test:80".to_owned(),
                    connect: false,
                    checked: vec![origin.ip()],
                };
                Admission::Allow(r)
            }
            Self::Fail(kind) => Admission::Fail(Failure::new(kind, "the stub gate fails")),
        };
        gate.answer_others(answer);
        gate
    }
}

/// How the upstream end of a dial behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The dial fails with this kind.
    Refuse(UpstreamFailure),
    /// Answers each request head with a small response (`200`, or `101` to an upgrade), and
    /// echoes nothing.
    Respond,
    /// Echoes every byte.
    Echo,
    /// Closes at once.
    Close,
    /// Reads everything, answers nothing.
    Stall,
    /// Writes a banner first, then reads everything.
    Banner,
    /// Answers the first request head with the start of a response (its head promises more
    /// body than it sends), then reads everything and says nothing more.
    Partial,
}

/// The response [`Origin::Respond`] gives a head.
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
/// The response it gives a head that asks for a websocket.
const SWITCH: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n";
/// What [`Origin::Partial`] answers.
const PARTIAL: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nhello";
/// The banner [`Origin::Banner`] writes.
const BANNER: &[u8] = b"SSH-2.0-origin\r\n";

impl Origin {
    pub(crate) fn read(input: &mut Input<'_>) -> Self {
        match input.below(9) {
            0 => Self::Refuse(UpstreamFailure::ConnectRefused),
            1 => Self::Refuse(UpstreamFailure::ConnectFailed),
            2 | 3 => Self::Respond,
            4 => Self::Echo,
            5 => Self::Close,
            6 => Self::Stall,
            7 => Self::Banner,
            _ => Self::Partial,
        }
    }
}

/// The dialer: each dial gets a fresh [`Origin`] of the chosen kind. It counts the dials and
/// the bytes its origins read and wrote.
#[derive(Debug)]
pub(crate) struct Upstreams {
    origin: Origin,
    pub(crate) dials: AtomicUsize,
    pub(crate) read: Arc<AtomicU64>,
    pub(crate) written: Arc<AtomicU64>,
}

impl Upstreams {
    pub(crate) fn new(origin: Origin) -> Self {
        Self {
            origin,
            dials: AtomicUsize::new(0),
            read: Arc::default(),
            written: Arc::default(),
        }
    }
}

impl Dialer for Upstreams {
    type Conn = DuplexStream;

    async fn dial(&self, _route: &Route) -> Result<DuplexStream, Failure> {
        self.dials.fetch_add(1, Ordering::SeqCst);
        let origin = self.origin;
        if let Origin::Refuse(kind) = origin {
            return Err(Failure::new(kind, "the stub dialer refuses"));
        }
        let (ours, theirs) = tokio::io::duplex(BUFFER);
        let (read, written) = (self.read.clone(), self.written.clone());
        tokio::spawn(serve_origin(origin, theirs, read, written));
        Ok(ours)
    }
}

/// One origin connection, until its peer closes.
async fn serve_origin(
    origin: Origin,
    mut stream: DuplexStream,
    read: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
) {
    let mut out: Vec<u8> = match origin {
        Origin::Refuse(_) | Origin::Close => return,
        Origin::Banner => BANNER.to_vec(),
        _ => Vec::new(),
    };
    let mut buf = vec![0u8; 4096];
    // What was read since the last head's end (its last bytes only), to find the next one.
    let mut tail: Vec<u8> = Vec::new();
    let mut partial_sent = false;
    loop {
        if !out.is_empty() {
            written.fetch_add(out.len() as u64, Ordering::SeqCst);
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        read.fetch_add(n as u64, Ordering::SeqCst);
        match origin {
            Origin::Echo => out.extend_from_slice(&buf[..n]),
            Origin::Partial if !partial_sent => {
                partial_sent = true;
                out.extend_from_slice(PARTIAL);
            }
            Origin::Respond => {
                tail.extend_from_slice(&buf[..n]);
                while let Some(end) = tail.windows(4).position(|w| w == b"\r\n\r\n") {
                    let upgrade = tail[..end]
                        .to_ascii_lowercase()
                        .windows(9)
                        .any(|w| w == b"websocket");
                    out.extend_from_slice(if upgrade { SWITCH } else { RESPONSE });
                    tail.drain(..end + 4);
                }
                let keep = tail.len().min(4096);
                tail.drain(..tail.len() - keep);
            }
            _ => {}
        }
    }
}

/// The interceptor: takes every tunnel (or none), answers the client one line and closes.
#[derive(Debug)]
pub(crate) struct Greeter {
    pub(crate) accepts: bool,
}

/// What `Greeter` answers.
pub(crate) const GREETING: &[u8] = b"intercepted\n";

impl<C: proxy_io::Stream, U: Send + 'static> Interceptor<C, U> for Greeter {
    fn accepts(&self, _meta: &RequestMeta, _route: &Route) -> Result<(), Decision> {
        if self.accepts {
            Ok(())
        } else {
            Err(Decision::deny(Reason::MitmRequired))
        }
    }

    async fn intercept(&self, tunnel: Intercepted<C, U>) -> (u64, u64) {
        let mut client = tunnel.client;
        let _ = client.write_all(GREETING).await;
        let _ = client.shutdown().await;
        (0, GREETING.len() as u64)
    }
}

/// What became of one connection.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// The first bytes the server wrote (at most [`KEEP`]).
    pub(crate) written: Vec<u8>,
    /// How many bytes it wrote in all.
    pub(crate) total: u64,
}

/// Serves one connection: `serve` gets the server's end of the stream, the client writes
/// `bytes` as `pacing` says and reads everything. Panics when serving takes longer than
/// `bound`, or when a task panicked.
pub(crate) fn drive<F, Fut>(
    bytes: &[u8],
    pacing: &Pacing,
    bound: Duration,
    io: bool,
    serve: F,
) -> Outcome
where
    F: FnOnce(DuplexStream) -> Fut,
    Fut: Future<Output = ()>,
{
    let before = panics();
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_time().start_paused(true);
    if io {
        builder.enable_io();
    }
    let runtime = builder
        .build()
        .unwrap_or_else(|e| panic!("no runtime: {e}"));
    let chunks = pacing.chunks(bytes);
    let close = pacing.close;
    let outcome = runtime.block_on(async move {
        let (client, server) = tokio::io::duplex(BUFFER);
        let (mut from_server, mut to_server) = tokio::io::split(client);
        let writer = tokio::spawn(async move {
            for (pause, chunk) in chunks {
                tokio::time::sleep(pause).await;
                if to_server.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            if close {
                let _ = to_server.shutdown().await;
            } else {
                // Held open until the harness ends it.
                std::future::pending::<()>().await;
            }
        });
        let reader = tokio::spawn(async move {
            let mut kept = Vec::new();
            let mut total = 0u64;
            let mut buf = vec![0u8; 8192];
            while let Ok(n) = from_server.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                total += n as u64;
                let room = KEEP.saturating_sub(kept.len()).min(n);
                kept.extend_from_slice(&buf[..room]);
            }
            (kept, total)
        });
        if tokio::time::timeout(bound, serve(server)).await.is_err() {
            panic!("the connection was still open after {bound:?} of virtual time");
        }
        writer.abort();
        // The server's end is gone: the client reads to its end at once.
        let read = tokio::time::timeout(Duration::from_secs(1), reader).await;
        let Ok(Ok((written, total))) = read else {
            panic!("the client did not see the connection end: {read:?}");
        };
        Outcome { written, total }
    });
    drop(runtime);
    assert_eq!(panics(), before, "a task panicked (see above)");
    outcome
}
