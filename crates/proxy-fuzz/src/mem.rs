//! An in-memory byte stream for the parsers that read with tokio's traits: reads come from a
//! slice, a few bytes at a time (so partial reads are exercised), writes are kept. Neither
//! ever waits, so a future that reads and writes only through it is ready when first polled
//! ([`ready`]).

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Reads from `input` at most `chunk` bytes at a time (then EOF), keeps what is written.
#[derive(Debug)]
pub struct Mem<'a> {
    input: &'a [u8],
    chunk: usize,
    /// What was written to the stream.
    pub written: Vec<u8>,
}

impl<'a> Mem<'a> {
    /// A stream that gives `input`, at most `chunk` (at least 1) bytes per read.
    pub fn new(input: &'a [u8], chunk: usize) -> Self {
        Self {
            input,
            chunk: chunk.max(1),
            written: Vec::new(),
        }
    }
}

impl AsyncRead for Mem<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let n = this.input.len().min(this.chunk).min(buf.remaining());
        let (now, rest) = this.input.split_at(n);
        buf.put_slice(now);
        this.input = rest;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Mem<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().written.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The output of a future that never waits (it reads and writes only in memory), polled
/// once; a future that is still pending then is a broken invariant.
pub fn ready<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a parser waited on an in-memory stream"),
    }
}
