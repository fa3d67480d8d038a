//! Byte tunnels: copy both ways, honour half-close, and close when no byte moved either way
//! for the idle timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The size of each direction's copy buffer, allocated when the first byte arrives.
const BUF: usize = 32 * 1024;

struct Activity {
    start: Instant,
    last_ms: AtomicU64,
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

async fn pump<R, W>(mut from: R, mut to: W, idle: Duration, activity: Arc<Activity>) -> u64
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf: Vec<u8> = Vec::new();
    let mut total = 0u64;
    loop {
        if buf.is_empty() {
            buf.resize(BUF, 0);
        }
        match tokio::time::timeout(idle, from.read(&mut buf)).await {
            Err(_) => {
                // Quiet this way; the tunnel is idle only if the other way is quiet too.
                if activity.idle_for() >= idle {
                    break;
                }
            }
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => {
                activity.touch();
                total += n as u64;
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    // Half-close: the peer sees our end of this direction.
    let _ = to.shutdown().await;
    total
}

/// Copies bytes both ways between `a` and `b` until both directions end or the tunnel is idle
/// for `idle`. Returns the bytes copied (a → b, b → a).
pub async fn tunnel<A, B>(a: A, b: B, idle: Duration) -> (u64, u64)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Arc::new(Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    });
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    let up = pump(ar, bw, idle, activity.clone());
    let down = pump(br, aw, idle, activity);
    tokio::join!(up, down)
}
