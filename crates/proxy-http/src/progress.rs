//! The request body's progress, for the response-head timeout: "no response head within
//! `idle_timeout`" counts from the last moment the request moved, not from when it was sent.
//! A request whose body takes longer than the idle timeout to upload (a large upload on a slow
//! link) is not a timeout while its frames keep coming; an upstream that stops reading the body
//! (hyper then stops polling it), or a client that stops sending it, or an upstream that says
//! nothing once it has it, is one after `idle_timeout` of that silence.
//!
//! The cost: one clock read per request-body frame.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// When a request last moved: its sending began ([`head_within`] was called), or its body gave
/// a frame or ended.
#[derive(Debug)]
pub(crate) struct Progress {
    start: Instant,
    /// Milliseconds from `start` to the last frame.
    last_ms: AtomicU64,
}

impl Progress {
    /// A request about to be sent.
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    /// The body gave a frame, or ended.
    pub(crate) fn moved(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Sends: waits for `head` (the response head) until `idle` passed with no progress of the
/// request, counted from now at the earliest; `None` then. `head` is borrowed, pinned where the
/// caller made it: taken by value, it would be held twice (docs/benchmarks.md).
pub(crate) async fn head_within<F: Future>(
    idle: Duration,
    progress: &Progress,
    mut head: Pin<&mut F>,
) -> Option<F::Output> {
    progress.moved();
    loop {
        let last = progress.last();
        match tokio::time::timeout_at(last + idle, &mut head).await {
            Ok(r) => return Some(r),
            Err(_) if progress.last() > last => {}
            Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn a_head_is_awaited_while_the_request_moves_and_idle_after() {
        // Nothing moves: the timeout is the idle period from the sending (a dial came first).
        let p = Progress::new();
        tokio::time::sleep(Duration::from_secs(4)).await;
        let start = Instant::now();
        assert!(
            head_within(IDLE, &p, std::pin::pin!(std::future::pending::<()>()))
                .await
                .is_none()
        );
        assert_eq!(start.elapsed(), IDLE);

        // A body that gives a frame every 6 s for 60 s, then ends: no timeout while it moves,
        // then the idle period from its last frame.
        let p = std::sync::Arc::new(Progress::new());
        let start = Instant::now();
        let body = {
            let p = p.clone();
            tokio::spawn(async move {
                for _ in 0..10 {
                    tokio::time::sleep(Duration::from_secs(6)).await;
                    p.moved();
                }
            })
        };
        assert!(
            head_within(IDLE, &p, std::pin::pin!(std::future::pending::<()>()))
                .await
                .is_none()
        );
        assert_eq!(start.elapsed(), Duration::from_secs(60) + IDLE);
        body.await.unwrap();

        // A head that comes is returned.
        let p = Progress::new();
        let head = async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            7
        };
        assert_eq!(head_within(IDLE, &p, std::pin::pin!(head)).await, Some(7));
    }
}
