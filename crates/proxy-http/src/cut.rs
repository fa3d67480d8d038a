//! A forwarded response body watched for the upstream failing it: a frame that fails (the
//! connection reset or closed before the body's announced end), or no frame for the idle
//! timeout while the client waits for one (the upstream stalled mid-body). Either is told once,
//! so the gate records the failure (docs/faults.md), and the client's connection is reset
//! (`reset.rs`), which the body alone cannot do: the client sees its body end short of its
//! length or its chunked framing with a reset, never a body that looks whole, even when the
//! body was delimited by the connection's close (an HTTP/1.0 client).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// How the upstream failed a body.
pub(crate) enum Cut<'a> {
    /// A frame failed with this error.
    Broke(&'a hyper::Error),
    /// No frame came for this long while the client waited.
    Stalled(Duration),
}

/// `inner`, watched: `on_cut` is called once, at the first failed frame or stall, and `close`
/// is notified (the client connection's, which its task then drops with a reset).
pub(crate) struct Watched<B, F> {
    inner: B,
    on_cut: Option<F>,
    idle: Duration,
    close: Arc<crate::reset::Abort>,
    /// Since when the client has waited for the next frame (`None`: it has not since the last).
    waiting_since: Option<Instant>,
    /// Fires `idle` after `waiting_since`; made at the first wait.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<B, F> Watched<B, F> {
    pub(crate) fn new(
        inner: B,
        idle: Duration,
        close: Arc<crate::reset::Abort>,
        on_cut: F,
    ) -> Self {
        Self {
            inner,
            on_cut: Some(on_cut),
            idle,
            close,
            waiting_since: None,
            timer: None,
        }
    }
}

impl<B, F> Body for Watched<B, F>
where
    B: Body<Data = Bytes, Error = hyper::Error> + Unpin,
    F: FnOnce(Cut<'_>) + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Err(e))) => {
                if let Some(on_cut) = this.on_cut.take() {
                    on_cut(Cut::Broke(e));
                    this.close.abort();
                }
            }
            Poll::Ready(_) => this.waiting_since = None,
            Poll::Pending => {
                // The clock runs only while the client waits on the upstream: a client that
                // reads slowly is not polling, and does not make the upstream look stalled.
                let deadline = match this.waiting_since {
                    Some(since) => since + this.idle,
                    None => {
                        let now = Instant::now();
                        this.waiting_since = Some(now);
                        match &mut this.timer {
                            Some(t) => t.as_mut().reset(now + this.idle),
                            None => this.timer = Some(Box::pin(tokio::time::sleep(this.idle))),
                        }
                        now + this.idle
                    }
                };
                let fired = this
                    .timer
                    .as_mut()
                    .is_some_and(|t| t.as_mut().poll(cx).is_ready());
                if fired
                    && Instant::now() >= deadline
                    && let Some(on_cut) = this.on_cut.take()
                {
                    on_cut(Cut::Stalled(this.idle));
                    this.close.abort();
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What broke, in plain words: the innermost I/O error's text when there is one (`the
/// connection was reset`), otherwise hyper's own.
pub(crate) fn why(e: &hyper::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return proxy_core::io_error_text(io);
        }
        source = s.source();
    }
    e.to_string()
}
