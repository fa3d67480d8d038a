//! The accept loop both front-ends share: at most `max_connections` connections served at once
//! (the rest wait in the kernel's accept backlog), every task counted so shutdown can wait for
//! it, and new connections refused (not left waiting) while the process is out of descriptors.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
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
        tokio::spawn(self.counted(fut));
    }

    /// `fut`, counted until it completes or is dropped. A combinator rather than an `async`
    /// block: a block that awaits a future it captured keeps room for it twice (rustc moves it
    /// from the capture to the awaited slot), which doubled every task's size, an idle
    /// tunnel's included (docs/benchmarks.md).
    fn counted<F: Future<Output = ()>>(
        self: &Arc<Self>,
        fut: F,
    ) -> impl Future<Output = ()> + use<F> {
        self.running.fetch_add(1, Ordering::AcqRel);
        let guard = Tracked(self.clone());
        fut.map(move |()| drop(guard))
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

/// The first pause after a failed `accept`; each failure in a row doubles it, up to
/// [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(50);
/// The longest pause between two `accept` attempts while they fail: how long a listener may
/// stay deaf after descriptors free up.
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// How long `accept` must go without failing before an episode is over: a client that closes
/// one connection and opens two, over and over, keeps one episode (one pair of log lines), not
/// a pair per connection.
const QUIET: Duration = Duration::from_secs(1);

/// A run of failed `accept` calls (an episode: the descriptor limit reached, the kernel out of
/// memory): logged once when it starts, and once when a connection has been accepted and no
/// `accept` has failed for [`QUIET`].
struct Failing {
    since: tokio::time::Instant,
    /// The last failure (or the end of the last pause).
    last: tokio::time::Instant,
    /// A connection was accepted since the last failure: the episode ends [`QUIET`] after that
    /// failure, with or without another connection.
    accepted: bool,
    attempts: u64,
    /// Connections taken with the reserve descriptor and reset.
    refused: u64,
    pause: Duration,
}

/// One descriptor held back (`/dev/null`, opened for reading) so that, at the descriptor
/// limit, the loop can still take a waiting connection off the backlog and refuse it: closing
/// the reserve frees a slot for `accept`, the connection is reset, and the reserve is opened
/// again. Without it a client would wait, unanswered, for as long as the episode lasts.
struct Reserve(Option<std::fs::File>);

impl Reserve {
    fn open() -> Self {
        match std::fs::File::open("/dev/null") {
            Ok(f) => Self(Some(f)),
            Err(e) => {
                tracing::debug!(error = %e, "no reserve descriptor: at the descriptor limit new \
                    connections wait in the backlog until one can be had");
                Self(None)
            }
        }
    }

    /// Takes the reserve again if it was lost (another task took the freed descriptor first).
    fn refill(&mut self) {
        if self.0.is_none() {
            *self = Self::open();
        }
    }
}

/// Whether a failed `accept` means the process (`EMFILE`) or the system (`ENFILE`) has no
/// descriptor left: the case the reserve is for.
fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(
        rustix::io::Errno::from_io_error(e),
        Some(rustix::io::Errno::MFILE | rustix::io::Errno::NFILE)
    )
}

/// What [`refuse_one`] did.
enum Refusal {
    /// A waiting connection was taken and reset.
    Refused,
    /// None was waiting: the next `accept` waits for one.
    NoneWaiting,
    /// The connection was gone before it could be taken (reset or aborted while it waited).
    Gone,
    /// No descriptor could be freed (the reserve was lost and cannot be had again) or
    /// `accept` still failed.
    Unable,
}

/// With the reserve closed, takes one connection already waiting in `listener`'s backlog (never
/// waits for one) and resets it; then opens the reserve again.
fn refuse_one(listener: &TcpListener, reserve: &mut Reserve) -> Refusal {
    // A reserve lost to another task is taken again first, when a descriptor has come free.
    reserve.refill();
    if reserve.0.take().is_none() {
        return Refusal::Unable;
    }
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let done = match listener.poll_accept(&mut cx) {
        std::task::Poll::Ready(Ok((stream, peer))) => {
            // A reset, not a clean close: the client learns at once that it was turned away.
            let _ = stream.set_zero_linger();
            drop(stream);
            tracing::debug!(%peer, "refused a connection: out of descriptors");
            Refusal::Refused
        }
        std::task::Poll::Pending => Refusal::NoneWaiting,
        std::task::Poll::Ready(Err(e)) if is_per_connection(&e) => Refusal::Gone,
        std::task::Poll::Ready(Err(_)) => Refusal::Unable,
    };
    reserve.refill();
    done
}

/// Accepts connections until `shutdown` completes and spawns `serve` for each on `tracker`,
/// holding one of `max_connections` slots for as long as the connection's task runs. Then it
/// drops the listener (no new connections) and returns; the caller waits on the tracker.
///
/// When `accept` fails (above all at the descriptor limit, `EMFILE`), the connections already
/// served go on; at the descriptor limit each connection waiting in the backlog is taken with a
/// reserve descriptor and reset (refused, not left waiting); and the loop tries again after a
/// pause that doubles from 50 ms to 1 s. It logs one warning when such an episode starts and
/// one line, with the count refused, once a connection has been accepted and no `accept` has
/// failed for a second, never a line per attempt (docs/faults.md). A connection that was reset
/// before it could be accepted is skipped without a pause.
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
    let mut failing: Option<Failing> = None;
    let mut reserve = Reserve::open();
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
                Err(e) if is_per_connection(&e) => {
                    tracing::debug!(error = %e, "a connection was gone before it was accepted");
                    continue;
                }
                Err(e) => {
                    let f = failing.get_or_insert_with(|| {
                        tracing::warn!(
                            listener = %local(&listener),
                            error = %e,
                            "cannot accept connections: new ones are refused until this works \
                             again; open connections are served"
                        );
                        Failing {
                            since: tokio::time::Instant::now(),
                            last: tokio::time::Instant::now(),
                            accepted: false,
                            attempts: 0,
                            refused: 0,
                            pause: FIRST_PAUSE,
                        }
                    });
                    f.attempts += 1;
                    f.last = tokio::time::Instant::now();
                    f.accepted = false;
                    if out_of_descriptors(&e) {
                        match refuse_one(&listener, &mut reserve) {
                            // More may be waiting, or the next `accept` waits for one: no
                            // pause, a new client is refused as soon as it comes.
                            Refusal::Refused => {
                                f.refused += 1;
                                continue;
                            }
                            Refusal::NoneWaiting | Refusal::Gone => continue,
                            Refusal::Unable => {}
                        }
                    }
                    let pause = f.pause;
                    f.pause = (f.pause * 2).min(MAX_PAUSE);
                    drop(permit);
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(pause) => {
                            // The quiet second counts from the end of the pause.
                            f.last = tokio::time::Instant::now();
                            continue;
                        }
                    }
                }
            },
            // Accepting has worked and nothing failed for a quiet second: the episode is over
            // even if no other client comes.
            () = sleep_until(quiet_at(failing.as_ref())) => {
                end_episode(&listener, &mut failing, &mut reserve);
                continue;
            }
        };
        if let Some(f) = failing.as_mut() {
            f.accepted = true;
            f.pause = FIRST_PAUSE;
            if f.last.elapsed() >= QUIET {
                end_episode(&listener, &mut failing, &mut reserve);
            }
        }
        tracker.spawn(serve(stream, peer, permit));
    }
}

/// When an episode ends without another connection: [`QUIET`] after its last failure once a
/// connection has been accepted since; never while none has been (the limit may still hold:
/// nothing says it does not) or outside an episode.
fn quiet_at(failing: Option<&Failing>) -> Option<tokio::time::Instant> {
    failing.filter(|f| f.accepted).map(|f| f.last + QUIET)
}

/// Completes at `at`, or never.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Ends the episode: the reserve taken again, one line with its figures.
fn end_episode(listener: &TcpListener, failing: &mut Option<Failing>, reserve: &mut Reserve) {
    let Some(f) = failing.take() else {
        return;
    };
    reserve.refill();
    tracing::warn!(
        listener = %local(listener),
        failed_attempts = f.attempts,
        refused = f.refused,
        after_ms = u64::try_from(f.since.elapsed().as_millis()).unwrap_or(u64::MAX),
        "accepting connections again"
    );
}

/// Whether a failed `accept` concerns only the connection it would have returned (reset or
/// aborted while it waited), not the listener.
fn is_per_connection(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
    )
}

/// The listener's address, for the log.
fn local(listener: &TcpListener) -> String {
    listener
        .local_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A counted task holds its future once: an `async` block awaiting the future it captured
    /// would hold it twice, and a task is mostly its future (an idle tunnel's memory).
    #[tokio::test]
    async fn a_counted_task_holds_its_future_once() {
        let tracker = Arc::new(Tracker::default());
        let big = [7u8; 4096];
        let fut = async move {
            tokio::task::yield_now().await;
            std::hint::black_box(&big);
        };
        let size = std::mem::size_of_val(&fut);
        let counted = tracker.counted(fut);
        let whole = std::mem::size_of_val(&counted);
        assert!(whole <= size + 64, "{whole} bytes for a {size}-byte future");
        assert_eq!(tracker.running.load(Ordering::Acquire), 1);
        // Dropped before it completed: no longer counted.
        drop(counted);
        assert_eq!(tracker.running.load(Ordering::Acquire), 0);
        tracker.spawn(async { tokio::task::yield_now().await });
        tokio::time::timeout(Duration::from_secs(10), tracker.idle())
            .await
            .expect("the spawned task ended");
    }
}
