//! A body that counts the bytes it carries into the front-end's [`proxy_io::Stats`], for the
//! `bytes` metric of forwarded requests and responses.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use crate::progress::Progress;

/// Which way the bytes go.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Direction {
    /// Client to upstream.
    Up,
    /// Upstream to client.
    Down,
}

/// `inner`, counting its data frames.
#[derive(Debug)]
pub(crate) struct Counted<B> {
    inner: B,
    stats: Arc<proxy_io::Stats>,
    direction: Direction,
    /// Told of each frame and of the end (a request body, for the response-head timeout).
    progress: Option<Arc<Progress>>,
}

impl<B> Counted<B> {
    pub(crate) fn new(inner: B, stats: Arc<proxy_io::Stats>, direction: Direction) -> Self {
        Self {
            inner,
            stats,
            direction,
            progress: None,
        }
    }

    /// Tells `progress` of each frame and of the end.
    pub(crate) fn with_progress(mut self, progress: Arc<Progress>) -> Self {
        self.progress = Some(progress);
        self
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let (Poll::Ready(_), Some(p)) = (&polled, &self.progress) {
            p.moved();
        }
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let n = data.len() as u64;
            match self.direction {
                Direction::Up => self.stats.add_bytes(n, 0),
                Direction::Down => self.stats.add_bytes(0, n),
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
