//! The accept loop both front-ends share: at most `max_connections` connections served at once
//! (the rest wait in the kernel's accept backlog), every task counted so shutdown can wait for
//! it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Counts spawned tasks; [`Tracker::idle`] completes when none is left. Cheaper than a
/// `JoinSet` on a per-tunnel path: one atomic increment and decrement, no lock.
#[derive(Debug, Default)]
pub struct Tracker {
    running: AtomicUsize,
    done: Notify,
}

/// Decrements the count when the task ends, however it ends.
struct Tracked(Arc<Tracker>);

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.done.notify_waiters();
        }
    }
}

impl Tracker {
    /// Spawns a counted task.
    pub fn spawn(self: &Arc<Self>, fut: impl Future<Output = ()> + Send + 'static) {
        self.running.fetch_add(1, Ordering::AcqRel);
        let guard = Tracked(self.clone());
        tokio::spawn(async move {
            let _guard = guard;
            fut.await;
        });
    }

    /// Completes when no counted task is running.
    pub async fn idle(&self) {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.running.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Accepts connections until `shutdown` completes and spawns `serve` for each on `tracker`,
/// holding one of `max_connections` slots for as long as the connection's task runs. Then it
/// drops the listener (no new connections) and returns; the caller waits on the tracker.
pub async fn accept_loop<S, F, Fut>(
    listener: TcpListener,
    max_connections: usize,
    tracker: &Arc<Tracker>,
    shutdown: S,
    serve: F,
) where
    S: Future<Output = ()>,
    F: Fn(TcpStream, SocketAddr, OwnedSemaphorePermit) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        tracker.spawn(serve(stream, peer, permit));
    }
}
