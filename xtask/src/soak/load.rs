//! The soak's load, each kind a task at a fixed rate, and the policy task (a reload every
//! period, an admin change half a period later). Every answer is checked against what the
//! policy in force must answer and counted as the audit events it stands for
//! ([`Tally::event`]); anything else is an error. Only loopback is dialled.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_rustls::TlsConnector;

use super::judge::{
    ADMIN_HOST, ConfigParams, Counts, DENIED_HOST, ECHO_HOST, EventKey, HOOK_PREFIX, HTTP_HOST,
    Metrics, TLS_HOST, TOGGLE_HOST, UDP_HOST, UNLISTED_HOST, answer_reason, config_text,
    events_for_answer, parse_metrics,
};
use super::servers::HTTP_BODY;
use crate::mitm::http::Reader;

/// How long one operation (a request, a tunnel, an association, a policy step) may take
/// before it counts as failed.
pub(crate) const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// Requests on one kept-alive client connection before the next connection.
const REQUESTS_PER_CONNECTION: u32 = 200;

/// Requests in each intercepted tunnel (one of them refused by the hook).
const TLS_REQUESTS: u32 = 5;

/// Datagrams echoed in each UDP association (after one to a refused destination).
const UDP_DATAGRAMS: u32 = 4;

/// The HTTPS origin's body length.
pub(crate) const TLS_BODY: usize = 1024;

/// The kinds of load, and the policy task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    Http,
    Connect,
    SocksTcp,
    SocksUdp,
    Tls,
    Policy,
}

impl Kind {
    pub(crate) const ALL: [Kind; 6] = [
        Kind::Http,
        Kind::Connect,
        Kind::SocksTcp,
        Kind::SocksUdp,
        Kind::Tls,
        Kind::Policy,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Http => "http",
            Kind::Connect => "connect",
            Kind::SocksTcp => "socks-tcp",
            Kind::SocksUdp => "socks-udp",
            Kind::Tls => "mitm-tls",
            Kind::Policy => "policy",
        }
    }

    /// What one operation of the kind is.
    pub(crate) fn unit(self) -> &'static str {
        match self {
            Kind::Http => "requests on kept-alive connections",
            Kind::Connect => "CONNECT tunnels (open, 32 bytes echoed, close)",
            Kind::SocksTcp => "SOCKS5 CONNECTs (open, 32 bytes echoed, close)",
            Kind::SocksUdp => "UDP associations (1 refused destination, 4 datagrams echoed)",
            Kind::Tls => "intercepted tunnels (5 requests inside, 1 refused by the hook)",
            Kind::Policy => "reloads (SIGHUP) and admin changes",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What one kind did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KindStats {
    /// Operations finished (well or not).
    pub(crate) ops: u64,
    /// Decisions the answers stand for: allowed, refused, revoked.
    pub(crate) allowed: u64,
    pub(crate) refused: u64,
    pub(crate) revoked: u64,
    pub(crate) errors: u64,
}

/// Everything the load counted.
#[derive(Debug)]
pub(crate) struct Tally {
    start: Instant,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    kinds: [KindStats; 6],
    expected: Counts,
    errors: Vec<String>,
}

/// Errors printed as they happen; the rest are counted.
const ERRORS_SHOWN: usize = 20;

impl Tally {
    pub(crate) fn new(start: Instant) -> Self {
        Self {
            start,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One audit event the soak caused, seen in the answer it got.
    pub(crate) fn event(&self, kind: Kind, key: EventKey) {
        let mut s = self.state();
        let k = &mut s.kinds[kind.index()];
        if key.revoked {
            k.revoked += 1;
        } else if key.decision == "allow" {
            k.allowed += 1;
        } else {
            k.refused += 1;
        }
        *s.expected.entry(key).or_default() += 1;
    }

    /// One operation finished.
    pub(crate) fn op(&self, kind: Kind) {
        self.state().kinds[kind.index()].ops += 1;
    }

    /// One error: an unexpected answer, a failed request or step.
    pub(crate) fn error(&self, kind: Kind, what: impl std::fmt::Display) {
        let t = self.start.elapsed().as_secs_f64();
        let mut s = self.state();
        s.kinds[kind.index()].errors += 1;
        let line = format!("[{t:>7.1} s] {}: {what}", kind.name());
        if s.errors.len() < ERRORS_SHOWN {
            println!("    error {line}");
            s.errors.push(line);
        }
    }

    pub(crate) fn kinds(&self) -> [KindStats; 6] {
        self.state().kinds
    }

    pub(crate) fn expected(&self) -> Counts {
        self.state().expected.clone()
    }

    pub(crate) fn errors(&self) -> (u64, Vec<String>) {
        let s = self.state();
        (s.kinds.iter().map(|k| k.errors).sum(), s.errors.clone())
    }
}

/// The origins' ports on 127.0.0.1.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ports {
    pub(crate) http: u16,
    pub(crate) echo: u16,
    pub(crate) udp: u16,
    pub(crate) tls: u16,
}

/// What every task needs.
#[derive(Clone)]
pub(crate) struct Env {
    pub(crate) http_proxy: SocketAddr,
    pub(crate) socks_proxy: SocketAddr,
    pub(crate) admin: SocketAddr,
    pub(crate) token: String,
    pub(crate) ports: Ports,
    /// Trusts netproxy's CA only.
    pub(crate) tls: TlsConnector,
    pub(crate) tally: Arc<Tally>,
}

/// The stop signal every task watches.
pub(crate) type Stop = watch::Receiver<bool>;

async fn timed<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(OP_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out after {OP_TIMEOUT:?}")))
}

fn pacer(per_second: f64) -> Interval {
    let mut iv = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second));
    iv.set_missed_tick_behavior(MissedTickBehavior::Delay);
    iv
}

/// Waits for the next tick; `false` once the soak stops.
async fn tick(iv: &mut Interval, stop: &mut Stop) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = iv.tick() => !*stop.borrow(),
        _ = stop.changed() => false,
    }
}

/// An HTTP answer as the client saw it.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    /// The `reason` of netproxy's own JSON answers.
    reason: Option<String>,
    body_len: usize,
    close: bool,
}

/// Sends `request` and reads the answer.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    r: &mut Reader<S>,
    request: &[u8],
) -> anyhow::Result<Answer> {
    let io = r.get_mut();
    io.write_all(request).await?;
    io.flush().await?;
    let head = r.head().await?.context("closed before the answer")?;
    let body = r.body_bytes(&head).await?;
    Ok(Answer {
        status: head.status,
        reason: answer_reason(&body),
        body_len: body.len(),
        close: head.close,
    })
}

impl Env {
    /// Counts the events `answer` stands for and checks it against what was due: with `want`
    /// `None` an answer from the origin (with `body` bytes when given), else netproxy's `403`
    /// with that reason. Returns whether it was due.
    fn judge(
        &self,
        kind: Kind,
        protocol: &str,
        answer: &Answer,
        want: Option<&str>,
        body: Option<usize>,
    ) -> bool {
        match events_for_answer(protocol, answer.status, answer.reason.as_deref()) {
            Some(events) => {
                for e in events {
                    self.tally.event(kind, e);
                }
            }
            None => self.tally.error(
                kind,
                format!(
                    "{protocol}: an answer the soak cannot count: {} {:?}",
                    answer.status, answer.reason
                ),
            ),
        }
        let due = match want {
            None => {
                answer.status == 200
                    && answer.reason.is_none()
                    && body.is_none_or(|b| b == answer.body_len)
            }
            Some(r) => answer.status == 403 && answer.reason.as_deref() == Some(r),
        };
        if !due {
            self.tally.error(
                kind,
                format!(
                    "{protocol}: expected {}, got {} {} ({} body bytes)",
                    want.map_or("200 from the origin".to_owned(), |r| format!("403 {r}")),
                    answer.status,
                    answer.reason.as_deref().unwrap_or("-"),
                    answer.body_len
                ),
            );
        }
        due
    }
}

/// HTTP keep-alive: absolute-form `GET`s on a kept-alive client connection (a new one every
/// [`REQUESTS_PER_CONNECTION`]); of every ten, one to a denied and one to an unlisted host.
pub(crate) async fn http(env: Env, per_second: f64, worker: u64, mut stop: Stop) {
    let mut iv = pacer(per_second);
    let mut conn: Option<(Reader<TcpStream>, u32)> = None;
    let mut i = worker;
    let port = env.ports.http;
    while tick(&mut iv, &mut stop).await {
        i += 1;
        let (host, want) = match i % 10 {
            3 => (DENIED_HOST, Some("denied")),
            7 => (UNLISTED_HOST, Some("not_allowed")),
            _ => (HTTP_HOST, None),
        };
        if conn
            .as_ref()
            .is_none_or(|(_, used)| *used >= REQUESTS_PER_CONNECTION)
        {
            match timed(async { Ok(TcpStream::connect(env.http_proxy).await?) }).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    conn = Some((Reader::new(s), 0));
                }
                Err(e) => {
                    env.tally
                        .error(Kind::Http, format!("connect to the proxy: {e:#}"));
                    env.tally.op(Kind::Http);
                    continue;
                }
            }
        }
        let Some((r, used)) = conn.as_mut() else {
            continue;
        };
        *used += 1;
        let req =
            format!("GET http://{host}:{port}/soak/{i} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n");
        match timed(exchange(r, req.as_bytes())).await {
            Ok(a) => {
                env.judge(Kind::Http, "http", &a, want, Some(HTTP_BODY));
                if a.close {
                    conn = None;
                }
            }
            Err(e) => {
                env.tally
                    .error(Kind::Http, format!("GET http://{host}: {e:#}"));
                conn = None;
            }
        }
        env.tally.op(Kind::Http);
    }
}

/// `CONNECT host:port` through the HTTP proxy: the answer, and the tunnel when it is a `200`.
async fn connect_tunnel(
    proxy: SocketAddr,
    host: &str,
    port: u16,
) -> anyhow::Result<(Answer, Option<TcpStream>)> {
    let tcp = TcpStream::connect(proxy)
        .await
        .context("connect to the proxy")?;
    tcp.set_nodelay(true)?;
    let mut r = Reader::new(tcp);
    let req = format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n");
    r.get_mut().write_all(req.as_bytes()).await?;
    let head = r
        .head()
        .await?
        .context("the proxy closed before answering CONNECT")?;
    if head.status == 200 {
        let a = Answer {
            status: 200,
            reason: None,
            body_len: 0,
            close: false,
        };
        return Ok((a, Some(r.into_inner()?)));
    }
    let body = r.body_bytes(&head).await?;
    let a = Answer {
        status: head.status,
        reason: answer_reason(&body),
        body_len: body.len(),
        close: true,
    };
    Ok((a, None))
}

/// Writes 32 bytes and reads them back.
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, tag: u64) -> anyhow::Result<()> {
    let out = format!("soak echo {tag:>22}\n");
    s.write_all(out.as_bytes()).await?;
    let mut back = vec![0u8; out.len()];
    s.read_exact(&mut back)
        .await
        .context("reading the echo back")?;
    ensure!(back == out.as_bytes(), "the echo came back changed");
    Ok(())
}

/// CONNECT churn: a new tunnel to the TCP echo each time, 32 bytes echoed, closed; one in five
/// to a denied host.
pub(crate) async fn connect(env: Env, per_second: f64, mut stop: Stop) {
    let mut iv = pacer(per_second);
    let mut i = 0u64;
    while tick(&mut iv, &mut stop).await {
        i += 1;
        let (host, want) = if i.is_multiple_of(5) {
            (DENIED_HOST, Some("denied"))
        } else {
            (ECHO_HOST, None)
        };
        let r = timed(async {
            let (a, tunnel) = connect_tunnel(env.http_proxy, host, env.ports.echo).await?;
            if env.judge(Kind::Connect, "https_connect", &a, want, None)
                && let Some(mut t) = tunnel
            {
                echo(&mut t, i).await?;
            }
            Ok(())
        })
        .await;
        if let Err(e) = r {
            env.tally
                .error(Kind::Connect, format!("CONNECT {host}: {e:#}"));
        }
        env.tally.op(Kind::Connect);
    }
}

/// The SOCKS5 greeting (no authentication) on a new connection.
async fn socks_hello(proxy: SocketAddr) -> anyhow::Result<TcpStream> {
    let mut s = TcpStream::connect(proxy)
        .await
        .context("connect to the SOCKS5 proxy")?;
    s.set_nodelay(true)?;
    s.write_all(&[5, 1, 0]).await?;
    let mut m = [0u8; 2];
    s.read_exact(&mut m).await?;
    ensure!(m == [5, 0], "SOCKS5 method reply {m:?}");
    Ok(s)
}

/// A SOCKS5 request (`cmd` with a domain or an IPv4 address) and its reply: REP and the bound
/// address. The address is read only when REP is 0 (after a refusal the proxy may close).
async fn socks_request(
    s: &mut TcpStream,
    cmd: u8,
    target: (&str, u16),
) -> anyhow::Result<(u8, Option<SocketAddr>)> {
    let mut req = vec![5, cmd, 0];
    match target.0.parse::<Ipv4Addr>() {
        Ok(ip) => {
            req.push(1);
            req.extend_from_slice(&ip.octets());
        }
        Err(_) => {
            req.push(3);
            req.push(u8::try_from(target.0.len()).context("name too long")?);
            req.extend_from_slice(target.0.as_bytes());
        }
    }
    req.extend_from_slice(&target.1.to_be_bytes());
    s.write_all(&req).await?;
    let mut h = [0u8; 4];
    s.read_exact(&mut h).await.context("the SOCKS5 reply")?;
    ensure!(h[0] == 5, "SOCKS5 reply version {}", h[0]);
    if h[1] != 0 {
        return Ok((h[1], None));
    }
    let ip = match h[3] {
        1 => {
            let mut a = [0u8; 4];
            s.read_exact(&mut a).await?;
            IpAddr::from(a)
        }
        4 => {
            let mut a = [0u8; 16];
            s.read_exact(&mut a).await?;
            IpAddr::from(a)
        }
        t => bail!("SOCKS5 reply address type {t}"),
    };
    let mut p = [0u8; 2];
    s.read_exact(&mut p).await?;
    Ok((0, Some(SocketAddr::new(ip, u16::from_be_bytes(p)))))
}

/// Counts a SOCKS5 `CONNECT` reply: REP 0 allowed, REP 2 refused (`want_refused`'s reason:
/// SOCKS replies carry none). Returns whether it was due.
fn judge_socks(env: &Env, kind: Kind, rep: u8, host: &str, want_refused: Option<&str>) -> bool {
    match rep {
        0 => env.tally.event(kind, EventKey::allowed("socks5_tcp")),
        2 => env.tally.event(
            kind,
            EventKey::refused("socks5_tcp", want_refused.unwrap_or("?")),
        ),
        _ => {}
    }
    let due = match want_refused {
        None => rep == 0,
        Some(_) => rep == 2,
    };
    if !due {
        env.tally.error(
            kind,
            format!(
                "SOCKS5 CONNECT {host}: expected REP {}, got {rep}",
                if want_refused.is_some() { 2 } else { 0 }
            ),
        );
    }
    due
}

/// SOCKS5 TCP: a `CONNECT` to the TCP echo each time, 32 bytes echoed, closed; one in five to
/// an unlisted host (REP 2).
pub(crate) async fn socks_tcp(env: Env, per_second: f64, mut stop: Stop) {
    let mut iv = pacer(per_second);
    let mut i = 0u64;
    while tick(&mut iv, &mut stop).await {
        i += 1;
        let (host, want) = if i.is_multiple_of(5) {
            (UNLISTED_HOST, Some("not_allowed"))
        } else {
            (ECHO_HOST, None)
        };
        let r = timed(async {
            let mut s = socks_hello(env.socks_proxy).await?;
            let (rep, _) = socks_request(&mut s, 1, (host, env.ports.echo)).await?;
            if judge_socks(&env, Kind::SocksTcp, rep, host, want) && rep == 0 {
                echo(&mut s, i).await?;
            }
            Ok(())
        })
        .await;
        if let Err(e) = r {
            env.tally
                .error(Kind::SocksTcp, format!("SOCKS5 CONNECT {host}: {e:#}"));
        }
        env.tally.op(Kind::SocksTcp);
    }
}

/// A SOCKS5 UDP datagram to `host:port` with `payload`.
fn datagram(host: &str, port: u16, payload: &[u8]) -> Vec<u8> {
    let mut d = vec![0, 0, 0, 3, u8::try_from(host.len()).unwrap_or(0)];
    d.extend_from_slice(host.as_bytes());
    d.extend_from_slice(&port.to_be_bytes());
    d.extend_from_slice(payload);
    d
}

/// The payload of a SOCKS5 UDP reply (after RSV, FRAG and the address).
fn reply_payload(d: &[u8]) -> anyhow::Result<&[u8]> {
    ensure!(
        d.len() >= 4 && d[..3] == [0, 0, 0],
        "a UDP reply with a bad header"
    );
    let at = match d[3] {
        1 => 4 + 4 + 2,
        4 => 4 + 16 + 2,
        3 => 4 + 1 + usize::from(*d.get(4).context("short UDP reply")?) + 2,
        t => bail!("UDP reply address type {t}"),
    };
    d.get(at..).context("short UDP reply")
}

/// One UDP association: a datagram to a denied destination (dropped by the relay, one refusal
/// recorded), then [`UDP_DATAGRAMS`] datagrams to the UDP echo, each echoed back (one `allow`
/// recorded for the destination). The client declares its UDP address.
async fn udp_association(env: &Env, i: u64) -> anyhow::Result<()> {
    let udp = UdpSocket::bind("127.0.0.1:0").await?;
    let local = udp.local_addr()?;
    let mut ctl = socks_hello(env.socks_proxy).await?;
    let (rep, relay) = socks_request(&mut ctl, 3, ("127.0.0.1", local.port())).await?;
    ensure!(rep == 0, "UDP ASSOCIATE answered REP {rep}");
    let relay = relay.context("no relay address")?;
    ensure!(relay.ip().is_loopback(), "a relay not on loopback: {relay}");
    udp.send_to(
        &datagram(
            DENIED_HOST,
            env.ports.udp,
            format!("refused {i}").as_bytes(),
        ),
        relay,
    )
    .await?;
    let mut buf = vec![0u8; 2048];
    for j in 0..UDP_DATAGRAMS {
        let payload = format!("soak udp {i} {j}");
        udp.send_to(
            &datagram(UDP_HOST, env.ports.udp, payload.as_bytes()),
            relay,
        )
        .await?;
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), udp.recv_from(&mut buf))
            .await
            .with_context(|| format!("no echo of datagram {j} within 5 s"))??;
        ensure!(from == relay, "a datagram from {from}, not the relay");
        let got = reply_payload(&buf[..n])?;
        ensure!(
            got == payload.as_bytes(),
            "datagram {j} came back as {:?}",
            String::from_utf8_lossy(got)
        );
        if j == 0 {
            // The relay judged the refused destination before this one (it reads in order).
            env.tally
                .event(Kind::SocksUdp, EventKey::allowed("socks5_udp"));
            env.tally
                .event(Kind::SocksUdp, EventKey::refused("socks5_udp", "denied"));
        }
    }
    Ok(())
}

/// SOCKS5 UDP: one association per tick (see [`udp_association`]).
pub(crate) async fn socks_udp(env: Env, per_second: f64, mut stop: Stop) {
    let mut iv = pacer(per_second);
    let mut i = 0u64;
    while tick(&mut iv, &mut stop).await {
        i += 1;
        if let Err(e) = timed(udp_association(&env, i)).await {
            env.tally
                .error(Kind::SocksUdp, format!("UDP association: {e:#}"));
        }
        env.tally.op(Kind::SocksUdp);
    }
}

/// One intercepted tunnel: `CONNECT` to the HTTPS origin's hooked name, TLS with netproxy's
/// certificate for it, [`TLS_REQUESTS`] `GET`s (the third outside the hook's prefix, refused
/// `mitm_hook_denied`), then close_notify.
async fn tls_tunnel(env: &Env, i: u64) -> anyhow::Result<()> {
    let port = env.ports.tls;
    let (a, tunnel) = connect_tunnel(env.http_proxy, TLS_HOST, port).await?;
    if !env.judge(Kind::Tls, "https_connect", &a, None, None) {
        return Ok(());
    }
    let tunnel = tunnel.context("no tunnel after a 200")?;
    let tls = env
        .tls
        .connect(ServerName::try_from(TLS_HOST)?.to_owned(), tunnel)
        .await
        .context("TLS handshake with netproxy")?;
    let mut r = Reader::new(tls);
    for j in 0..TLS_REQUESTS {
        let (path, want) = if j == 2 {
            ("/nope".to_owned(), Some("mitm_hook_denied"))
        } else {
            (format!("{HOOK_PREFIX}{i}/{j}"), None)
        };
        let req = format!("GET {path} HTTP/1.1\r\nHost: {TLS_HOST}:{port}\r\n\r\n");
        let a = exchange(&mut r, req.as_bytes())
            .await
            .with_context(|| format!("GET {path} inside the tunnel"))?;
        env.judge(Kind::Tls, "https", &a, want, Some(TLS_BODY));
        if a.close {
            bail!("netproxy closed the session after {path}");
        }
    }
    let _ = r.get_mut().shutdown().await;
    Ok(())
}

/// Intercepted TLS: one tunnel per tick (see [`tls_tunnel`]).
pub(crate) async fn tls(env: Env, per_second: f64, mut stop: Stop) {
    let mut iv = pacer(per_second);
    let mut i = 0u64;
    while tick(&mut iv, &mut stop).await {
        i += 1;
        if let Err(e) = timed(tls_tunnel(&env, i)).await {
            env.tally
                .error(Kind::Tls, format!("intercepted tunnel: {e:#}"));
        }
        env.tally.op(Kind::Tls);
    }
}

/// An admin API request: its status and body.
async fn admin(
    env: &Env,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<(u16, Vec<u8>)> {
    let tcp = TcpStream::connect(env.admin)
        .await
        .context("connect to the admin API")?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n",
        env.admin, env.token
    );
    if let Some(b) = body {
        req += &format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        );
    }
    req += "\r\n";
    req += body.unwrap_or("");
    let mut r = Reader::new(tcp);
    r.get_mut().write_all(req.as_bytes()).await?;
    let head = r.head().await?.context("the admin API closed")?;
    ensure!(
        head.length.is_some() || head.chunked,
        "an admin answer without a length"
    );
    let body = r.body_bytes(&head).await?;
    Ok((head.status, body))
}

/// `GET /metrics`, read.
pub(crate) async fn metrics(env: &Env) -> anyhow::Result<Metrics> {
    let (status, body) = timed(admin(env, "GET", "/metrics", None)).await?;
    ensure!(status == 200, "GET /metrics answered {status}");
    parse_metrics(&String::from_utf8_lossy(&body)).map_err(anyhow::Error::msg)
}

/// `GET /patterns`: the allowed and denied patterns.
async fn patterns(env: &Env) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let (status, body) = timed(admin(env, "GET", "/patterns", None)).await?;
    ensure!(status == 200, "GET /patterns answered {status}");
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    let list = |k: &str| -> Vec<String> {
        v[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok((list("allowed"), list("denied")))
}

/// Polls `GET /patterns` until `ok` holds (at most [`OP_TIMEOUT`]).
async fn wait_patterns(
    env: &Env,
    what: &str,
    ok: impl Fn(&[String], &[String]) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + OP_TIMEOUT;
    loop {
        let (allowed, denied) = patterns(env).await?;
        if ok(&allowed, &denied) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{what}: not in force after {OP_TIMEOUT:?} (allowed {allowed:?}, denied {denied:?})"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until netproxy closes `s` (a revoked connection): end of stream or a reset.
async fn wait_closed(s: &mut TcpStream) -> anyhow::Result<()> {
    let mut b = [0u8; 64];
    match tokio::time::timeout(OP_TIMEOUT, s.read(&mut b)).await {
        Ok(Ok(0) | Err(_)) => Ok(()),
        Ok(Ok(n)) => bail!("{n} unexpected bytes instead of the close"),
        Err(_) => bail!("still open {OP_TIMEOUT:?} after the change"),
    }
}

/// A plain `GET` to `host` on a new client connection, `Connection: close`.
async fn probe(env: &Env, host: &str, want: Option<&str>) -> anyhow::Result<()> {
    let port = env.ports.http;
    let tcp = TcpStream::connect(env.http_proxy).await?;
    let mut r = Reader::new(tcp);
    let req = format!(
        "GET http://{host}:{port}/probe HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
    );
    let a = exchange(&mut r, req.as_bytes()).await?;
    env.judge(Kind::Policy, "http", &a, want, Some(HTTP_BODY));
    Ok(())
}

/// What the policy task changes.
#[derive(Debug, Clone)]
pub(crate) struct PolicyCtl {
    pub(crate) pid: u32,
    /// `$NETPROXY_HOME/config.toml`.
    pub(crate) config: PathBuf,
    pub(crate) params: ConfigParams,
    /// How often each of the two changes comes.
    pub(crate) period: Duration,
}

/// The policy task: every period a reload (the config file rewritten with [`TOGGLE_HOST`]
/// toggled, the audit file moved away, SIGHUP), and half a period later an admin change
/// ([`ADMIN_HOST`] allowed or denied with `POST /domains`). A change that narrows the policy
/// finds a connection held open to the host it stops allowing, which must be closed.
pub(crate) async fn policy(env: Env, ctl: PolicyCtl, start: Instant, mut stop: Stop) {
    let mut toggle = true;
    let mut admin_allowed = None;
    for n in 1u32.. {
        let admin_at = start + ctl.period * (n - 1) + ctl.period / 2;
        if !sleep_until(admin_at, &mut stop).await {
            return;
        }
        if let Err(e) = timed(admin_change(&env, &mut admin_allowed)).await {
            env.tally
                .error(Kind::Policy, format!("admin change: {e:#}"));
        }
        env.tally.op(Kind::Policy);
        if !sleep_until(start + ctl.period * n, &mut stop).await {
            return;
        }
        if let Err(e) = timed(reload(&env, &ctl, &mut toggle, n)).await {
            env.tally.error(Kind::Policy, format!("reload: {e:#}"));
        }
        env.tally.op(Kind::Policy);
    }
}

/// `false` when the soak stops first.
async fn sleep_until(at: Instant, stop: &mut Stop) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep_until(at.into()) => !*stop.borrow(),
        _ = stop.changed() => false,
    }
}

/// A `CONNECT` tunnel to the TCP echo under `host`, echoing: one `allow`.
async fn hold_tunnel(env: &Env, host: &str) -> anyhow::Result<TcpStream> {
    let (a, t) = connect_tunnel(env.http_proxy, host, env.ports.echo).await?;
    ensure!(
        env.judge(Kind::Policy, "https_connect", &a, None, None),
        "CONNECT {host} refused before the change"
    );
    let mut t = t.context("no tunnel after a 200")?;
    echo(&mut t, 0).await?;
    Ok(t)
}

async fn reload(env: &Env, ctl: &PolicyCtl, toggle: &mut bool, n: u32) -> anyhow::Result<()> {
    let narrowing = *toggle;
    let mut held = if narrowing {
        Some(hold_tunnel(env, TOGGLE_HOST).await?)
    } else {
        None
    };
    let before = metrics(env).await?;
    // Moved away as logrotate would: SIGHUP must reopen the file at its path.
    let audit = &ctl.params.audit_log;
    let moved = audit.with_extension(format!("jsonl.{n}"));
    std::fs::rename(audit, &moved)
        .with_context(|| format!("cannot move {} away", audit.display()))?;
    let tmp = ctl.config.with_extension("toml.tmp");
    std::fs::write(&tmp, config_text(&ctl.params, !narrowing))?;
    std::fs::rename(&tmp, &ctl.config)?;
    let status = std::process::Command::new("kill")
        .args(["-HUP", &ctl.pid.to_string()])
        .status()
        .context("cannot run kill")?;
    ensure!(status.success(), "kill -HUP failed ({status})");
    *toggle = !narrowing;
    let want = !narrowing;
    wait_patterns(env, "the reloaded config", |allowed, _| {
        allowed.iter().any(|p| p == TOGGLE_HOST) == want
    })
    .await?;
    let deadline = Instant::now() + OP_TIMEOUT;
    while !audit.exists() {
        ensure!(
            Instant::now() < deadline,
            "SIGHUP did not reopen the audit log at {}",
            audit.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = metrics(env).await?;
    ensure!(
        after.reloads_failed == before.reloads_failed,
        "a reload failed (netproxy_reloads_total{{result=\"failed\"}} {} -> {})",
        before.reloads_failed,
        after.reloads_failed
    );
    ensure!(
        after.reloads_ok > before.reloads_ok,
        "no reload counted (netproxy_reloads_total{{result=\"ok\"}} stayed {})",
        before.reloads_ok
    );
    if let Some(t) = held.as_mut() {
        wait_closed(t)
            .await
            .with_context(|| format!("the tunnel to {TOGGLE_HOST}"))?;
        env.tally.event(
            Kind::Policy,
            EventKey::revoked("https_connect", "not_allowed"),
        );
    }
    probe(env, TOGGLE_HOST, (!want).then_some("not_allowed")).await
}

async fn admin_change(env: &Env, allowed: &mut Option<bool>) -> anyhow::Result<()> {
    let allow = *allowed != Some(true);
    let mut held = if *allowed == Some(true) {
        let mut s = socks_hello(env.socks_proxy).await?;
        let (rep, _) = socks_request(&mut s, 1, (ADMIN_HOST, env.ports.echo)).await?;
        ensure!(
            judge_socks(env, Kind::Policy, rep, ADMIN_HOST, None),
            "SOCKS5 CONNECT {ADMIN_HOST} refused before the change"
        );
        echo(&mut s, 0).await?;
        Some(s)
    } else {
        None
    };
    let body = format!(
        "{{\"{}\":[\"{ADMIN_HOST}\"]}}",
        if allow { "allow" } else { "deny" }
    );
    let (status, answer) = admin(env, "POST", "/domains", Some(&body)).await?;
    ensure!(
        status == 200,
        "POST /domains {body} answered {status}: {}",
        String::from_utf8_lossy(&answer)
    );
    *allowed = Some(allow);
    // In force when answered (docs/admin-api.md): no waiting.
    let (a, d) = patterns(env).await?;
    let host = ADMIN_HOST.to_owned();
    ensure!(
        a.contains(&host) == allow && d.contains(&host) != allow,
        "after POST /domains {body}: allowed {a:?}, denied {d:?}"
    );
    let check = format!(
        "{{\"host\":\"{ADMIN_HOST}\",\"port\":{},\"method\":\"GET\",\"protocol\":\"http\"}}",
        env.ports.http
    );
    let (status, answer) = admin(env, "POST", "/check", Some(&check)).await?;
    let v: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
    ensure!(
        status == 200 && v["decision"] == if allow { "allow" } else { "deny" },
        "POST /check {check} answered {status}: {}",
        String::from_utf8_lossy(&answer)
    );
    if let Some(s) = held.as_mut() {
        wait_closed(s)
            .await
            .with_context(|| format!("the SOCKS5 connection to {ADMIN_HOST}"))?;
        env.tally
            .event(Kind::Policy, EventKey::revoked("socks5_tcp", "denied"));
    }
    probe(env, ADMIN_HOST, (!allow).then_some("denied")).await
}

/// One sample of netproxy's process.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    /// Seconds since the load started.
    pub(crate) t: f64,
    pub(crate) rss_kib: u64,
    pub(crate) fds: u64,
    /// utime + stime, clock ticks.
    pub(crate) cpu_ticks: u64,
    pub(crate) kinds: [KindStats; 6],
    pub(crate) load: String,
}

/// VmRSS (KiB) and the number of open descriptors of `pid`.
pub(crate) fn proc_sample(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("netproxy (pid {pid}) is gone"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc/PID/status")?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64;
    Ok((rss, fds))
}

/// Samples netproxy every `every` until the soak stops, printing every `print_every`-th
/// sample.
pub(crate) async fn sampler(
    pid: u32,
    tally: Arc<Tally>,
    start: Instant,
    every: Duration,
    print_every: usize,
    ticks_per_s: f64,
    mut stop: Stop,
) -> Vec<Sample> {
    let mut out: Vec<Sample> = Vec::new();
    let mut iv = tokio::time::interval(every);
    iv.set_missed_tick_behavior(MissedTickBehavior::Delay);
    while tick(&mut iv, &mut stop).await {
        let (rss_kib, fds) = match proc_sample(pid) {
            Ok(s) => s,
            Err(e) => {
                tally.error(Kind::Policy, format!("sampling: {e:#}"));
                break;
            }
        };
        let s = Sample {
            t: start.elapsed().as_secs_f64(),
            rss_kib,
            fds,
            cpu_ticks: crate::mitm::cpu_ticks(&format!("/proc/{pid}/stat")).unwrap_or(0),
            kinds: tally.kinds(),
            load: crate::mitm::loadavg(),
        };
        if out.len().is_multiple_of(print_every) {
            let prev = out.len().checked_sub(print_every).map(|i| &out[i]);
            let cpu = prev.map_or(0.0, |p| {
                (s.cpu_ticks.saturating_sub(p.cpu_ticks)) as f64 / ticks_per_s / (s.t - p.t)
            });
            let ops: Vec<String> = Kind::ALL
                .iter()
                .map(|k| format!("{} {}", k.name(), s.kinds[k.index()].ops))
                .collect();
            let errors: u64 = s.kinds.iter().map(|k| k.errors).sum();
            println!(
                "    [{:>6.0} s] RSS {:>7.1} MiB  fds {:>4}  CPU {:>5.1}%  | {} | errors {errors} | load {}",
                s.t,
                s.rss_kib as f64 / 1024.0,
                s.fds,
                cpu * 100.0,
                ops.join(" "),
                s.load
            );
        }
        out.push(s);
    }
    out
}
