//! A client connection netproxy can end with a reset. When a response breaks off after its head
//! (the upstream reset, stalled, or was closed by a narrower policy), the client must not read
//! the end of its connection as the end of the body: an HTTP/1.0 client, or any response whose
//! body is delimited by the close, would take a clean end of stream for a whole body. The
//! connection is then dropped with `SO_LINGER` 0, so the client reads a reset.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use proxy_io::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A client stream that can be closed with a reset instead of an orderly end.
pub trait ClientStream: Stream {
    /// Makes the coming close a reset (`SO_LINGER` 0 for TCP); streams without one (an
    /// in-memory stream) close as they do.
    fn reset_on_close(&self) {}
}

impl ClientStream for TcpStream {
    fn reset_on_close(&self) {
        let _ = self.set_zero_linger();
    }
}

impl ClientStream for tokio::io::DuplexStream {}

/// How a response that broke off ends its client connection: [`Abort::abort`] marks the
/// connection for a reset and wakes its task, which drops it.
#[derive(Debug, Default)]
pub(crate) struct Abort {
    notify: tokio::sync::Notify,
    reset: Arc<AtomicBool>,
}

impl Abort {
    /// Marks the client connection for a reset and asks its task to drop it.
    pub(crate) fn abort(&self) {
        self.reset.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// Completes once [`Abort::abort`] was called.
    pub(crate) async fn aborted(&self) {
        self.notify.notified().await;
    }
}

/// `inner`, reset when dropped once its [`Abort`] was called.
pub(crate) struct Resettable<S: ClientStream> {
    inner: Option<S>,
    reset: Arc<AtomicBool>,
}

impl<S: ClientStream> Resettable<S> {
    /// The stream, reset when dropped after `abort` was called, whoever drops it (the
    /// connection's task, or hyper when the broken body ended the connection first).
    pub(crate) fn new(inner: S, abort: &Abort) -> Self {
        Self {
            inner: Some(inner),
            reset: abort.reset.clone(),
        }
    }

    /// The stream itself (a `CONNECT` tunnel copies between the raw sockets); its drop is then
    /// an ordinary close.
    pub(crate) fn into_inner(mut self) -> Option<S> {
        self.inner.take()
    }

    fn get(&mut self) -> io::Result<&mut S> {
        self.inner
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl<S: ClientStream> Drop for Resettable<S> {
    fn drop(&mut self) {
        if self.reset.load(Ordering::Acquire)
            && let Some(s) = &self.inner
        {
            s.reset_on_close();
        }
    }
}

impl<S: ClientStream> AsyncRead for Resettable<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().get() {
            Ok(s) => Pin::new(s).poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl<S: ClientStream> AsyncWrite for Resettable<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().get() {
            Ok(s) => Pin::new(s).poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().get() {
            Ok(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(AsyncWrite::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().get() {
            Ok(s) => Pin::new(s).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().get() {
            Ok(s) => Pin::new(s).poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}
