//! The TLS load client: a `CONNECT` to the proxy (or a direct connection to the origin), a TLS
//! handshake with whatever certificate the proxy presents (checked against the proxy's CA, or
//! the origin's test CA when direct), then HTTP/1.1 `GET`s inside. Every loop is bounded in
//! time and in count, every operation by a timeout, and only loopback is dialled.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::http::Reader;
use super::origin::provider;

/// How long one operation (a session's setup, a request) may take before it counts as failed.
const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// One TLS session inside a tunnel (or straight to the origin).
pub(crate) type Session = Reader<TlsStream<TcpStream>>;

/// How the client reaches the origin.
#[derive(Clone)]
pub(crate) struct Client {
    /// The proxy, or `None` for the direct path.
    via: Option<SocketAddr>,
    tls: TlsConnector,
    /// The body length every response must have.
    body: usize,
}

impl Client {
    /// A client through `via` (or direct) trusting the PEM certificates in `ca_pem`. TLS
    /// sessions are never resumed: every session is a full handshake.
    pub(crate) fn new(via: Option<SocketAddr>, ca_pem: &[u8], body: usize) -> anyhow::Result<Self> {
        if let Some(p) = via {
            ensure!(
                p.ip().is_loopback(),
                "refusing a proxy that is not on loopback: {p}"
            );
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            roots.add(cert.context("a CA certificate in PEM")?)?;
        }
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.resumption = rustls::client::Resumption::disabled();
        Ok(Self {
            via,
            tls: TlsConnector::from(Arc::new(config)),
            body,
        })
    }

    /// Opens a session to `origin`: TCP, `CONNECT` when through a proxy, TLS.
    pub(crate) async fn open(&self, origin: SocketAddr) -> anyhow::Result<Session> {
        ensure!(
            origin.ip().is_loopback(),
            "refusing an origin that is not on loopback"
        );
        let tcp = match self.via {
            Some(proxy) => {
                let mut tcp = TcpStream::connect(proxy)
                    .await
                    .context("connect to the proxy")?;
                tcp.set_nodelay(true)?;
                tcp.write_all(
                    format!("CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\n\r\n").as_bytes(),
                )
                .await?;
                let mut r = Reader::new(tcp);
                let head = r
                    .head()
                    .await?
                    .context("the proxy closed before answering CONNECT")?;
                if head.status != 200 {
                    bail!("CONNECT answered {}", head.status);
                }
                r.into_inner()?
            }
            None => {
                let tcp = TcpStream::connect(origin)
                    .await
                    .context("connect to the origin")?;
                tcp.set_nodelay(true)?;
                tcp
            }
        };
        let tls = self
            .tls
            .connect(ServerName::IpAddress(origin.ip().into()), tcp)
            .await
            .context("TLS handshake")?;
        Ok(Reader::new(tls))
    }

    /// One `GET` on the session (with `Connection: close` when `close`); the response must be
    /// a 200 with the origin's body.
    pub(crate) async fn get(
        &self,
        s: &mut Session,
        origin: SocketAddr,
        close: bool,
    ) -> anyhow::Result<()> {
        let req = format!(
            "GET /bench HTTP/1.1\r\nHost: {origin}\r\n{}\r\n",
            if close { "Connection: close\r\n" } else { "" }
        );
        let io = s.get_mut();
        io.write_all(req.as_bytes()).await?;
        io.flush().await?;
        let head = s.head().await?.context("closed before the response")?;
        let n = s.body(&head).await?;
        if head.status != 200 {
            bail!("status {}", head.status);
        }
        ensure!(n == self.body, "body of {n} bytes, not {}", self.body);
        Ok(())
    }
}

/// What the workers of one run did.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Operations completed inside the measured window.
    pub(crate) ops: u64,
    /// Their latencies, µs.
    pub(crate) latencies: Vec<u32>,
    /// Failed operations.
    pub(crate) errors: u64,
    /// The first failure's message.
    pub(crate) first_error: Option<String>,
    /// Sessions the server side did not close (rate workload; the client then closed first).
    pub(crate) client_closed: u64,
}

impl Tally {
    fn error(&mut self, e: &anyhow::Error) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{e:#}"));
        }
    }

    fn merge(&mut self, other: Tally) {
        self.ops += other.ops;
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        self.client_closed += other.client_closed;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    /// The latency at quantile `q` (0..=1), µs.
    pub(crate) fn quantile(&mut self, q: f64) -> u32 {
        if self.latencies.is_empty() {
            return 0;
        }
        self.latencies.sort_unstable();
        let i = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        self.latencies[i]
    }
}

/// The window of one run: counted from `from` (after the warm-up) to `until`, and at most
/// `budget` operations in all.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    pub(crate) from: Instant,
    pub(crate) until: Instant,
    pub(crate) budget: Arc<AtomicU64>,
}

impl Window {
    fn more(&self) -> bool {
        Instant::now() < self.until
            && self
                .budget
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
                .is_ok()
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

async fn timed<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(OP_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out after {OP_TIMEOUT:?}")))
}

/// `mitm-get`: `conns` workers, each opening a session and sending `GET`s on it back to back
/// (a new session after a failure). Latency: one request.
pub(crate) async fn get_loop(client: Client, origin: SocketAddr, conns: usize, w: Window) -> Tally {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let (c, w) = (client.clone(), w.clone());
        tasks.spawn(async move {
            let mut t = Tally::default();
            'sessions: while Instant::now() < w.until {
                let mut s = match timed(c.open(origin)).await {
                    Ok(s) => s,
                    Err(e) => {
                        t.error(&e);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                while w.more() {
                    let t0 = Instant::now();
                    match timed(c.get(&mut s, origin, false)).await {
                        Ok(()) if t0 >= w.from => {
                            t.ops += 1;
                            t.latencies.push(micros(t0.elapsed()));
                        }
                        Ok(()) => {}
                        Err(e) => {
                            t.error(&e);
                            continue 'sessions;
                        }
                    }
                }
                break;
            }
            t
        });
    }
    join(tasks).await
}

/// `mitm-connect`: `conns` workers, each looping: a new session (CONNECT, full TLS handshake),
/// one `GET` with `Connection: close`, then waiting for the server side to close. Latency: the
/// whole session up to the response.
pub(crate) async fn connect_loop(
    client: Client,
    origin: SocketAddr,
    conns: usize,
    w: Window,
) -> Tally {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let (c, w) = (client.clone(), w.clone());
        tasks.spawn(async move {
            let mut t = Tally::default();
            while w.more() {
                let t0 = Instant::now();
                let r = timed(async {
                    let mut s = c.open(origin).await?;
                    c.get(&mut s, origin, true).await?;
                    let took = t0.elapsed();
                    // The server closes first (keeps TIME_WAIT off the client's ports).
                    let closed = tokio::time::timeout(Duration::from_secs(2), s.until_end())
                        .await
                        .is_ok_and(|r| r.is_ok());
                    Ok((took, closed))
                })
                .await;
                match r {
                    Ok((took, closed)) => {
                        if !closed {
                            t.client_closed += 1;
                        }
                        if t0 >= w.from {
                            t.ops += 1;
                            t.latencies.push(micros(took));
                        }
                    }
                    Err(e) => {
                        t.error(&e);
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            t
        });
    }
    join(tasks).await
}

async fn join(mut tasks: tokio::task::JoinSet<Tally>) -> Tally {
    let mut all = Tally::default();
    while let Some(t) = tasks.join_next().await {
        match t {
            Ok(t) => all.merge(t),
            Err(e) => all.error(&anyhow::anyhow!("a load task failed: {e}")),
        }
    }
    all
}

/// `mitm-idle`: opens `n` sessions (`at_once` at a time), each with one `GET` on a kept-alive
/// connection, and returns those that worked (they stay open while held) and the failures.
pub(crate) async fn open_idle(
    client: Client,
    origin: SocketAddr,
    n: usize,
    at_once: usize,
) -> (Vec<Session>, Tally) {
    let mut tasks = tokio::task::JoinSet::new();
    let mut sessions = Vec::with_capacity(n);
    let mut t = Tally::default();
    let mut started = 0;
    loop {
        while started < n && tasks.len() < at_once {
            let c = client.clone();
            tasks.spawn(async move {
                timed(async {
                    let mut s = c.open(origin).await?;
                    c.get(&mut s, origin, false).await?;
                    Ok(s)
                })
                .await
            });
            started += 1;
        }
        match tasks.join_next().await {
            None => break,
            Some(Ok(Ok(s))) => sessions.push(s),
            Some(Ok(Err(e))) => t.error(&e),
            Some(Err(e)) => t.error(&anyhow::anyhow!("a session task failed: {e}")),
        }
    }
    (sessions, t)
}

/// One more `GET` on each held session: how many are still alive.
pub(crate) async fn check_idle(
    client: &Client,
    origin: SocketAddr,
    sessions: &mut [Session],
) -> usize {
    let mut alive = 0;
    for s in sessions {
        if timed(client.get(s, origin, false)).await.is_ok() {
            alive += 1;
        }
    }
    alive
}
