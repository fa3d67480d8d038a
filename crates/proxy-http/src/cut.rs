//! A forwarded response body that tells when the upstream cuts it short: the connection reset
//! or closed before the body's announced end. The client's connection is then closed by hyper
//! (a truncation the client sees: the length or the chunked framing is not met), and the gate
//! records the failure (docs/faults.md).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

/// `inner`, calling `on_cut` once with the error of the first frame that fails.
pub(crate) struct CutShort<B, F> {
    inner: B,
    on_cut: Option<F>,
}

impl<B, F> CutShort<B, F> {
    pub(crate) fn new(inner: B, on_cut: F) -> Self {
        Self {
            inner,
            on_cut: Some(on_cut),
        }
    }
}

impl<B, F> Body for CutShort<B, F>
where
    B: Body<Data = Bytes> + Unpin,
    F: FnOnce(&B::Error) + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(e))) = &polled
            && let Some(on_cut) = self.on_cut.take()
        {
            on_cut(e);
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
