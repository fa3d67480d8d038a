//! Byte tunnels: copy both ways, honour half-close, and close when no byte moved either way
//! for the idle timeout.
//!
//! Memory matters more than anything for idle tunnels, and CPU per byte for busy ones. So each
//! direction first reads into a small buffer inside its own future; only when a read fills it
//! (bytes are flowing) does it take a large buffer from a shared pool, and it gives the large
//! buffer back as soon as a read comes back short or the direction goes quiet. An idle tunnel
//! therefore holds no large buffer at all.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

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
    /// Bytes copied a → b and b → a.
    up: AtomicU64,
    down: AtomicU64,
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

async fn pump<R, W>(mut from: R, mut to: W, idle: Duration, activity: &Activity, total: &AtomicU64)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut small = [0u8; SMALL];
    let mut large: Option<Box<[u8]>> = None;
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
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                activity.touch();
                total.fetch_add(n as u64, Ordering::Relaxed);
                let buf: &[u8] = match large.as_ref() {
                    Some(b) => b,
                    None => &small,
                };
                if to.write_all(&buf[..n]).await.is_err() {
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
    // Half-close: the peer sees our end of this direction. When the other direction has
    // already ended, the tunnel is over and closing the sockets says the same thing, so the
    // extra system call is skipped.
    if !activity.one_ended.swap(true, Ordering::AcqRel) {
        let _ = to.shutdown().await;
    }
}

fn activity() -> Activity {
    Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
        one_ended: std::sync::atomic::AtomicBool::new(false),
        up: AtomicU64::new(0),
        down: AtomicU64::new(0),
    }
}

/// Copies bytes both ways between `a` and `b` until both directions end or the tunnel is idle
/// for `idle`. Returns the bytes copied (a → b, b → a).
pub async fn tunnel<A, B>(a: A, b: B, idle: Duration) -> (u64, u64)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    tunnel_until(a, b, idle, std::future::pending()).await
}

/// [`tunnel`], cut short when `stop` completes (the policy revoked it): both ends are then
/// dropped, which closes them. Returns the bytes copied until then.
pub async fn tunnel_until<A, B>(
    a: A,
    b: B,
    idle: Duration,
    stop: impl Future<Output = ()>,
) -> (u64, u64)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = activity();
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    let up = pump(ar, bw, idle, &activity, &activity.up);
    let down = pump(br, aw, idle, &activity, &activity.down);
    until(async { tokio::join!(up, down) }, stop, &activity).await
}

/// [`tunnel`] between two TCP sockets, whose borrowed halves need neither a lock nor an
/// allocation.
pub async fn tunnel_tcp(a: TcpStream, b: TcpStream, idle: Duration) -> (u64, u64) {
    tunnel_tcp_until(a, b, idle, std::future::pending()).await
}

/// [`tunnel_tcp`], cut short when `stop` completes (the policy revoked it): both sockets are
/// then closed. Returns the bytes copied until then.
pub async fn tunnel_tcp_until(
    mut a: TcpStream,
    mut b: TcpStream,
    idle: Duration,
    stop: impl Future<Output = ()>,
) -> (u64, u64) {
    let activity = activity();
    let (ar, aw) = a.split();
    let (br, bw) = b.split();
    let up = pump(ar, bw, idle, &activity, &activity.up);
    let down = pump(br, aw, idle, &activity, &activity.down);
    until(async { tokio::join!(up, down) }, stop, &activity).await
}

/// The tunnel's result, or the bytes counted so far when `stop` completes first.
async fn until(
    tunnel: impl Future<Output = ((), ())>,
    stop: impl Future<Output = ()>,
    activity: &Activity,
) -> (u64, u64) {
    tokio::select! {
        biased;
        _ = tunnel => {}
        () = stop => {}
    }
    (
        activity.up.load(Ordering::Relaxed),
        activity.down.load(Ordering::Relaxed),
    )
}

/// The connection as a `TcpStream`, when that is what it is; `Err(Some(conn))` otherwise.
pub fn into_tcp<U: 'static>(conn: U) -> Result<TcpStream, Option<U>> {
    let mut slot = Some(conn);
    let tcp = (&mut slot as &mut dyn std::any::Any)
        .downcast_mut::<Option<TcpStream>>()
        .and_then(Option::take);
    tcp.ok_or(slot)
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
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let t = tokio::spawn(tunnel_until(
            a_proxy,
            b_proxy,
            Duration::from_secs(60),
            async move {
                let _ = stop_rx.await;
            },
        ));
        a_client.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        b_server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        stop_tx.send(()).unwrap();
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
}

#[cfg(test)]
mod tcp_tests {
    use super::*;

    #[tokio::test]
    async fn into_tcp_recognises_tcp_streams_only() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let s = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        assert!(into_tcp(s).is_ok());
        let (d, _) = tokio::io::duplex(16);
        assert!(matches!(into_tcp(d), Err(Some(_))));
    }
}
