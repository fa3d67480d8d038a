//! An upstream HTTP connection that no byte crossed, either way, for the idle timeout is closed
//! ([`proxy_io::Limits::idle_timeout`]: "a body or tunnel with no bytes either way for that
//! long is closed"). Without it, an upstream that stops in the middle of a response body, or a client
//! that stops in the middle of a request body the upstream already answered, would hold the
//! client connection, the upstream connection and a connection slot forever. Closing the
//! upstream connection ends both: the response body fails (the client connection is aborted,
//! never a truncated body that looks whole), and the request body is dropped (the client
//! connection is then closed).
//!
//! The cost on the path is one relaxed atomic add per read or write; the watch wakes once per
//! two idle periods and closes the connection after two to four periods of silence.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a watched connection and its users share.
#[derive(Debug, Default)]
struct State {
    /// Calls that moved bytes.
    moved: AtomicU64,
    /// netproxy closed the connection (the policy revoked it, or it was idle).
    closed: AtomicBool,
    /// It was closed because the policy revoked it.
    revoked: AtomicBool,
}

/// A stream that counts the calls that moved bytes on it.
#[derive(Debug)]
pub(crate) struct Watched<S> {
    inner: S,
    state: Arc<State>,
}

/// Completes once nothing moved on its [`Watched`] stream for two idle periods.
#[derive(Debug)]
pub(crate) struct Watch {
    state: Arc<State>,
}

/// The connection's state seen from a request on it: whether netproxy closed the connection.
#[derive(Debug, Clone)]
pub(crate) struct Handle {
    state: Arc<State>,
}

impl Handle {
    /// Whether netproxy closed the connection ([`Watch::closed_by_us`]: revoked, or idle, as a
    /// client that stopped reading leaves it): a body it cuts is then no failure of the
    /// upstream's.
    pub(crate) fn closed_by_us(&self) -> bool {
        self.state.closed.load(Ordering::Acquire)
    }

    /// Whether netproxy closed the connection because the policy revoked it ([`Watch::revoked`]).
    /// Before a response head, only that is no failure of the upstream's: an idle cut there
    /// means the upstream stopped reading the request.
    pub(crate) fn revoked(&self) -> bool {
        self.state.revoked.load(Ordering::Acquire)
    }
}

/// `stream`, watched.
pub(crate) fn watch<S>(stream: S) -> (Watched<S>, Watch) {
    let state = Arc::new(State::default());
    let watch = Watch {
        state: state.clone(),
    };
    (
        Watched {
            inner: stream,
            state,
        },
        watch,
    )
}

impl Watch {
    /// The handle requests on the connection use.
    pub(crate) fn handle(&self) -> Handle {
        Handle {
            state: self.state.clone(),
        }
    }

    /// Records that netproxy is closing the connection; call it before the connection drops.
    pub(crate) fn closed_by_us(&self) {
        self.state.closed.store(true, Ordering::Release);
    }

    /// Records that netproxy is closing the connection because the policy revoked it.
    pub(crate) fn revoked(&self) {
        self.state.revoked.store(true, Ordering::Release);
        self.closed_by_us();
    }

    /// Completes after twice `idle` in which no byte moved either way (between two and four
    /// periods after the last byte), as a tunnel does: a client that stops reading a body
    /// holds the upstream back, and is cut like one. Twice, so that the
    /// sharper bounds of one period win when both apply: the response head's timeout (a 504
    /// `upstream_timeout`) and the watched response body's stall (`cut.rs`, recorded as
    /// `upstream_timeout`); this is the backstop for what they do not watch (a request body
    /// that stalls after the answer, unix sockets).
    pub(crate) async fn silent(&self, idle: Duration) {
        let mut seen = self.state.moved.load(Ordering::Relaxed);
        loop {
            tokio::time::sleep(idle * 2).await;
            let now = self.state.moved.load(Ordering::Relaxed);
            if now == seen {
                return;
            }
            seen = now;
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.state.moved.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled
            && *n > 0
        {
            this.state.moved.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &polled
            && *n > 0
        {
            this.state.moved.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn silence_completes_the_watch_and_bytes_put_it_off() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let (mut ours, watch) = watch(ours);
        let idle = Duration::from_millis(100);
        // Bytes every 30 ms for 300 ms: the watch does not complete meanwhile.
        let busy = async {
            for _ in 0..10 {
                ours.write_all(b"x").await.unwrap();
                let mut b = [0u8; 1];
                theirs.read_exact(&mut b).await.unwrap();
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        };
        tokio::select! {
            () = busy => {}
            () = watch.silent(idle) => panic!("the watch completed while bytes moved"),
        }
        // Then silence: it completes within four periods, never within the first two.
        let early =
            tokio::time::timeout(idle * 2 - Duration::from_millis(1), watch.silent(idle)).await;
        assert!(
            early.is_err(),
            "the watch completed before two silent periods"
        );
        let quiet = tokio::time::timeout(idle * 5, watch.silent(idle)).await;
        assert!(quiet.is_ok());
    }
}
