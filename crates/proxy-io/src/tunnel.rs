//! Byte tunnels: copy both ways, honour half-close, and close when no byte moved either way
//! for the idle timeout. A side whose connection breaks (a read fails: it was reset) ends the
//! whole tunnel at once; between two TCP sockets the other side is then reset too, so a client
//! never takes a broken stream for one that ended cleanly (docs/faults.md).
//!
//! Memory matters more than anything for idle tunnels, and CPU per byte for busy ones. So each
//! direction first reads into a small buffer inside its own future; only when a read fills it
//! (bytes are flowing) does it take a large buffer from a shared pool, and it gives the large
//! buffer back as soon as a read comes back short or the direction goes quiet. An idle tunnel
//! therefore holds no large buffer at all.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
// Tokio's clock, as the timers' (the same as std's, unless a test pauses it).
use tokio::time::Instant;

/// The buffer each direction reads into until bytes flow.
const SMALL: usize = 128;
/// The pooled buffer used while bytes flow (64 KiB: the best CPU per byte measured here).
const LARGE: usize = 64 * 1024;
/// How many large buffers the pool keeps for reuse.
const POOL_MAX: usize = 64;

static POOL: Mutex<Vec<Box<[u8]>>> = Mutex::new(Vec::new());

fn take_large() -> Box<[u8]> {
    POOL.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .pop()
        .unwrap_or_else(|| vec![0u8; LARGE].into_boxed_slice())
}

fn give_back(buf: Box<[u8]>) {
    let mut pool = POOL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if pool.len() < POOL_MAX {
        pool.push(buf);
    }
}

struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    /// Set by the first direction to end.
    one_ended: std::sync::atomic::AtomicBool,
    /// The bytes copied each way (a → b, b → a), kept here so that a direction cut short by
    /// the other's break still counts what it moved.
    moved: [AtomicU64; 2],
}

/// How one direction of a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// EOF (then half-closed), the idle timeout, a write that failed or stalled, or `stop`.
    Closed,
    /// Reading failed: the side it reads from broke its connection (a reset).
    Broken,
}

/// Which side of a tunnel broke its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Broke {
    /// `a` (the client).
    A,
    /// `b` (the upstream).
    B,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.start.elapsed();
        now.saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Copies `from` to `to` until EOF, an error, the idle timeout (no byte either way, or a write
/// the peer does not take, for `idle`), or `stop` (then without the half-close: the caller
/// drops both ends); counts the bytes in `moved`. A failed read is [`End::Broken`], without the
/// half-close: the caller ends the tunnel.
async fn pump<R, W, S>(
    mut from: R,
    mut to: W,
    idle: Duration,
    activity: &Activity,
    moved: &AtomicU64,
    mut stop: Pin<&mut S>,
) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    S: Future<Output = ()>,
{
    let mut small = [0u8; SMALL];
    let mut large: Option<Box<[u8]>> = None;
    let mut end = End::Closed;
    // One timer per direction, re-armed only when it fires: bytes moving do not touch it.
    let deadline = tokio::time::sleep(idle);
    tokio::pin!(deadline);
    loop {
        let buf: &mut [u8] = match large.as_mut() {
            Some(b) => b,
            None => &mut small,
        };
        let cap = buf.len();
        let read = tokio::select! {
            biased;
            r = from.read(buf) => r,
            () = &mut deadline => {
                if let Some(b) = large.take() {
                    give_back(b);
                }
                let quiet = activity.idle_for();
                // Idle only if neither direction moved a byte for the whole period.
                if quiet >= idle {
                    break;
                }
                deadline.as_mut().reset(tokio::time::Instant::now() + (idle - quiet));
                continue;
            }
            () = stop.as_mut() => {
                if let Some(b) = large.take() {
                    give_back(b);
                }
                return End::Closed;
            }
        };
        match read {
            Ok(0) => break,
            Err(_) => {
                end = End::Broken;
                break;
            }
            Ok(n) => {
                activity.touch();
                moved.fetch_add(n as u64, Ordering::Relaxed);
                let buf: &[u8] = match large.as_ref() {
                    Some(b) => b,
                    None => &small,
                };
                // A peer that reads nothing must not hold the tunnel (and both its sockets)
                // forever: a write that cannot finish within `idle` ends it, as does `stop`.
                let written = tokio::select! {
                    biased;
                    r = to.write_all(&buf[..n]) => r.is_ok(),
                    () = tokio::time::sleep(idle) => false,
                    () = stop.as_mut() => {
                        if let Some(b) = large.take() {
                            give_back(b);
                        }
                        return End::Closed;
                    }
                };
                if !written {
                    break;
                }
                if n == cap && large.is_none() {
                    large = Some(take_large());
                } else if n < cap / 4
                    && let Some(b) = large.take()
                {
                    give_back(b);
                }
            }
        }
    }
    if let Some(b) = large.take() {
        give_back(b);
    }
    // A broken side ends the tunnel: no half-close, which would tell the peer that the stream
    // ended well.
    if end == End::Broken {
        return end;
    }
    // Half-close: the peer sees our end of this direction. When the other direction has
    // already ended, the tunnel is over and closing the sockets says the same thing, so the
    // extra system call is skipped.
    if !activity.one_ended.swap(true, Ordering::AcqRel) {
        let _ = to.shutdown().await;
    }
    end
}

fn activity() -> Activity {
    Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
        one_ended: std::sync::atomic::AtomicBool::new(false),
        moved: [AtomicU64::new(0), AtomicU64::new(0)],
    }
}

impl Activity {
    /// The bytes copied (a → b, b → a).
    fn moved(&self) -> (u64, u64) {
        (
            self.moved[0].load(Ordering::Relaxed),
            self.moved[1].load(Ordering::Relaxed),
        )
    }
}

/// Runs both directions until both have ended, or until one breaks: the other is then dropped
/// where it is (the caller closes both ends). Returns the side that broke.
///
/// The directions are borrowed, pinned where the caller made them: an `async fn` taking them
/// by value would hold each twice (rustc keeps room for an argument and for the local it is
/// moved to), and an idle tunnel is mostly these two futures (docs/benchmarks.md). Which
/// direction is polled first alternates, so a busy one cannot spend the task's budget before
/// the other is polled, every time.
async fn both(
    mut up: Pin<&mut impl Future<Output = End>>,
    mut down: Pin<&mut impl Future<Output = End>>,
) -> Option<Broke> {
    use std::task::{Context, Poll};

    /// Polls one direction unless it is over; `Some` when it broke.
    fn step(
        over: &mut bool,
        fut: Pin<&mut impl Future<Output = End>>,
        cx: &mut Context<'_>,
        side: Broke,
    ) -> Option<Broke> {
        if *over {
            return None;
        }
        match fut.poll(cx) {
            Poll::Ready(End::Broken) => Some(side),
            Poll::Ready(End::Closed) => {
                *over = true;
                None
            }
            Poll::Pending => None,
        }
    }

    let (mut up_over, mut down_over) = (false, false);
    let mut up_first = false;
    std::future::poll_fn(|cx| {
        up_first = !up_first;
        let mut poll_up = |cx: &mut Context<'_>| step(&mut up_over, up.as_mut(), cx, Broke::A);
        let mut poll_down =
            |cx: &mut Context<'_>| step(&mut down_over, down.as_mut(), cx, Broke::B);
        let broke = if up_first {
            poll_up(cx).or_else(|| poll_down(cx))
        } else {
            poll_down(cx).or_else(|| poll_up(cx))
        };
        match broke {
            Some(side) => Poll::Ready(Some(side)),
            None if up_over && down_over => Poll::Ready(None),
            None => Poll::Pending,
        }
    })
    .await
}

/// Copies bytes both ways between `a` and `b` until both directions end or the tunnel is idle
/// for `idle`. Returns the bytes copied (a → b, b → a).
pub async fn tunnel<A, B>(a: A, b: B, idle: Duration) -> (u64, u64)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    tunnel_until(a, b, idle, std::future::pending::<()>).await
}

/// [`tunnel`], cut short when a future made by `stop` completes (the policy revoked the
/// tunnel): `stop` is called once per direction, and each direction ends when its future does;
/// both ends are then dropped, which closes them. A side that breaks its connection ends the
/// tunnel too. Returns the bytes copied until then.
pub async fn tunnel_until<A, B, F, S>(a: A, b: B, idle: Duration, stop: F) -> (u64, u64)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
    F: Fn() -> S,
    S: Future<Output = ()>,
{
    let activity = activity();
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    let (stop_up, stop_down) = (stop(), stop());
    tokio::pin!(stop_up, stop_down);
    let up = std::pin::pin!(pump(ar, bw, idle, &activity, &activity.moved[0], stop_up));
    let down = std::pin::pin!(pump(br, aw, idle, &activity, &activity.moved[1], stop_down));
    both(up, down).await;
    activity.moved()
}

/// [`tunnel`] between two TCP sockets, whose borrowed halves need neither a lock nor an
/// allocation.
pub async fn tunnel_tcp(a: TcpStream, b: TcpStream, idle: Duration) -> (u64, u64) {
    tunnel_tcp_until(a, b, idle, std::future::pending::<()>).await
}

/// [`tunnel_tcp`], cut short like [`tunnel_until`] when a future made by `stop` completes.
/// When one side breaks its connection (a reset), the other is reset too (`SO_LINGER` 0 then
/// close), rather than closed as if the stream had ended.
pub async fn tunnel_tcp_until<F, S>(
    mut a: TcpStream,
    mut b: TcpStream,
    idle: Duration,
    stop: F,
) -> (u64, u64)
where
    F: Fn() -> S,
    S: Future<Output = ()>,
{
    let activity = activity();
    let broke = {
        let (ar, aw) = a.split();
        let (br, bw) = b.split();
        let (stop_up, stop_down) = (stop(), stop());
        tokio::pin!(stop_up, stop_down);
        let up = std::pin::pin!(pump(ar, bw, idle, &activity, &activity.moved[0], stop_up));
        let down = std::pin::pin!(pump(br, aw, idle, &activity, &activity.moved[1], stop_down));
        both(up, down).await
    };
    let other = match broke {
        Some(Broke::A) => Some(&b),
        Some(Broke::B) => Some(&a),
        None => None,
    };
    if let Some(other) = other {
        // Dropped at once below: the close sends the reset.
        let _ = other.set_zero_linger();
    }
    activity.moved()
}

/// The connection as a `TcpStream`, when that is what it is (a `TcpStream`, or a
/// [`Conn::Tcp`](crate::Conn::Tcp)); `Err(Some(conn))` otherwise.
pub fn into_tcp<U: 'static>(conn: U) -> Result<TcpStream, Option<U>> {
    let mut slot = Some(conn);
    let any = &mut slot as &mut dyn std::any::Any;
    if let Some(tcp) = any.downcast_mut::<Option<TcpStream>>() {
        return tcp.take().ok_or(None);
    }
    if let Some(conn) = any.downcast_mut::<Option<crate::Conn>>() {
        match conn.take() {
            Some(crate::Conn::Tcp(tcp)) => return Ok(tcp),
            other => *conn = other,
        }
    }
    Err(slot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn copies_both_ways_large_and_small_and_half_closes() {
        let (a_client, a_proxy) = tokio::io::duplex(1 << 20);
        let (b_proxy, b_server) = tokio::io::duplex(1 << 20);
        let t = tokio::spawn(tunnel(a_proxy, b_proxy, Duration::from_secs(5)));
        let (mut ar, mut aw) = tokio::io::split(a_client);
        let (mut br, mut bw) = tokio::io::split(b_server);
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            aw.write_all(&sent).await.unwrap();
            aw.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        br.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got, data);
        bw.write_all(b"pong").await.unwrap();
        bw.shutdown().await.unwrap();
        let mut back = Vec::new();
        ar.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"pong");
        assert_eq!(t.await.unwrap(), (3_000_000, 4));
    }

    #[tokio::test]
    async fn a_stopped_tunnel_closes_both_ends_and_counts_what_moved() {
        let (mut a_client, a_proxy) = tokio::io::duplex(1024);
        let (b_proxy, mut b_server) = tokio::io::duplex(1024);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let t = tokio::spawn(tunnel_until(
            a_proxy,
            b_proxy,
            Duration::from_secs(60),
            move || {
                let mut rx = stop_rx.clone();
                async move {
                    let _ = rx.wait_for(|s| *s).await;
                }
            },
        ));
        a_client.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        b_server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        stop_tx.send(true).unwrap();
        let counted = tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("the stopped tunnel ended")
            .unwrap();
        assert_eq!(counted, (5, 0));
        // Both ends see the close.
        let mut rest = Vec::new();
        assert_eq!(b_server.read_to_end(&mut rest).await.unwrap(), 0);
        assert_eq!(a_client.read_to_end(&mut rest).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn an_idle_tunnel_closes() {
        let (_a_client, a_proxy) = tokio::io::duplex(1024);
        let (b_proxy, _b_server) = tokio::io::duplex(1024);
        let start = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(3),
            tunnel(a_proxy, b_proxy, Duration::from_millis(200)),
        )
        .await;
        assert!(
            r.is_ok(),
            "the tunnel stayed open for {:?}",
            start.elapsed()
        );
    }

    /// A client that reads nothing while the other side keeps sending: the write toward it
    /// stalls, and the tunnel still ends within a few idle periods.
    #[tokio::test]
    async fn a_peer_that_reads_nothing_does_not_hold_the_tunnel() {
        let (_a_client, a_proxy) = tokio::io::duplex(1024);
        let (b_proxy, mut b_server) = tokio::io::duplex(1024);
        let writer = tokio::spawn(async move {
            let chunk = vec![7u8; 16 * 1024];
            while b_server.write_all(&chunk).await.is_ok() {}
        });
        let idle = Duration::from_secs(1);
        let r = tokio::time::timeout(idle * 3, tunnel(a_proxy, b_proxy, idle)).await;
        assert!(r.is_ok(), "a stalled write held the tunnel");
        writer.abort();
    }
}

#[cfg(test)]
mod tcp_tests {
    use super::*;

    /// Two connected TCP sockets on loopback.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let near = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (far, _) = listener.accept().await.unwrap();
        (near, far)
    }

    /// The upstream resets its connection after some bytes: the client gets those bytes, then
    /// a reset (not an EOF, which would pass a cut stream off as a whole one), at once, though
    /// it sends nothing itself; the bytes are counted.
    #[tokio::test]
    async fn a_reset_on_one_side_resets_the_other_and_ends_the_tunnel() {
        let (mut client, proxy_a) = pair().await;
        let (proxy_b, upstream) = pair().await;
        let t = tokio::spawn(tunnel_tcp(proxy_a, proxy_b, Duration::from_secs(60)));
        let mut upstream = upstream;
        upstream.write_all(b"partial").await.unwrap();
        let mut got = [0u8; 7];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"partial");
        upstream.set_zero_linger().unwrap();
        drop(upstream);
        let counted = tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("the broken tunnel ended")
            .unwrap();
        assert_eq!(counted, (0, 7));
        let mut rest = [0u8; 16];
        let err = client.read(&mut rest).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");

        // The other way round: the client resets, the upstream is reset.
        let (client, proxy_a) = pair().await;
        let (proxy_b, mut upstream) = pair().await;
        let t = tokio::spawn(tunnel_tcp(proxy_a, proxy_b, Duration::from_secs(60)));
        client.set_zero_linger().unwrap();
        drop(client);
        tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("the broken tunnel ended")
            .unwrap();
        let err = upstream.read(&mut rest).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    }

    #[tokio::test]
    async fn into_tcp_recognises_tcp_streams_only() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let s = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        assert!(into_tcp(s).is_ok());
        let s = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        assert!(into_tcp(crate::Conn::Tcp(s)).is_ok());
        let (d, _) = tokio::io::duplex(16);
        assert!(matches!(into_tcp(d), Err(Some(_))));
        let (u, _) = tokio::net::UnixStream::pair().unwrap();
        assert!(matches!(
            into_tcp(crate::Conn::Unix(u)),
            Err(Some(crate::Conn::Unix(_)))
        ));
    }
}

#[cfg(test)]
mod sizes {
    use super::*;

    /// Each poll of a tunnel polls both directions, the one first that went second the time
    /// before: a busy direction cannot always spend the task's budget before the other runs.
    #[test]
    fn the_direction_polled_first_alternates() {
        use std::cell::RefCell;
        use std::task::{Context, Poll, Waker};
        let order = RefCell::new(String::new());
        let side = |name: char| {
            let order = &order;
            std::future::poll_fn(move |_| {
                order.borrow_mut().push(name);
                Poll::<End>::Pending
            })
        };
        let (up, down) = (std::pin::pin!(side('u')), std::pin::pin!(side('d')));
        let mut tunnel = std::pin::pin!(both(up, down));
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..4 {
            assert!(tunnel.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(*order.borrow(), "uddu".repeat(2));
    }

    /// An idle tunnel's memory is mostly its future: it must hold each direction once (the
    /// `join`-like loop borrows them), not a second copy of each (what an `async fn` taking
    /// them by value costs: docs/benchmarks.md).
    #[tokio::test]
    async fn a_tunnel_holds_each_direction_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut a = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut b, _) = listener.accept().await.unwrap();
        let activity = activity();
        let stop = std::pin::pin!(std::future::pending::<()>());
        let (ar, _) = a.split();
        let (_, bw) = b.split();
        let one = pump(
            ar,
            bw,
            Duration::from_secs(1),
            &activity,
            &activity.moved[0],
            stop,
        );
        let direction = std::mem::size_of_val(&one);
        drop(one);
        let tunnel = tunnel_tcp_until(a, b, Duration::from_secs(1), std::future::pending::<()>);
        let whole = std::mem::size_of_val(&tunnel);
        assert!(
            whole <= 2 * direction + 512,
            "a tunnel's future is {whole} bytes, one direction's {direction}"
        );
    }
}
