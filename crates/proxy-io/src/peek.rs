//! Reading a client's first bytes to tell whether they start a TLS ClientHello, then giving
//! them back: [`peek_hello`] reads (bounded in bytes and time) and [`Replay`] serves the bytes it
//! read before the rest of the stream, so whoever reads next (a TLS server, a tunnel) sees the
//! stream whole.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use proxy_core::tls::{Hello, MAX_HELLO, client_hello, wanted};
use proxy_core::{Decision, Gate, Lease, RequestMeta, Route};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// How long `verify_sni` waits for a client's ClientHello.
pub const HELLO_WAIT: Duration = Duration::from_secs(5);

/// `verify_sni` on an opaque tunnel: reads the client's ClientHello (after `already`, bytes the
/// front-end had read past its request) for at most [`HELLO_WAIT`], asks the gate
/// ([`Gate::admit_hello`]), and on an allow writes every byte read to `upstream`, so the tunnel
/// goes on as if nothing had been read (that write too is bounded by [`HELLO_WAIT`]). On a
/// refusal (`Err(Some)`) nothing was relayed; `Err(None)`: the tunnel's `lease` was revoked
/// meanwhile (nothing relayed either), or the upstream failed while the bytes were relayed.
pub async fn verify_hello<G, C, U>(
    gate: &G,
    meta: &RequestMeta,
    route: &Route,
    lease: &Lease,
    client: &mut C,
    already: Vec<u8>,
    upstream: &mut U,
) -> Result<(), Option<Decision>>
where
    G: Gate,
    C: AsyncRead + Unpin,
    U: AsyncWrite + Unpin,
{
    let (hello, bytes) = tokio::select! {
        biased;
        () = lease.revoked() => return Err(None),
        read = peek_hello(client, already, HELLO_WAIT) => read,
    };
    let decision = gate.admit_hello(meta, route, &hello).await;
    if !decision.is_allowed() {
        return Err(Some(decision));
    }
    if lease.is_revoked() {
        return Err(None);
    }
    match tokio::time::timeout(HELLO_WAIT, upstream.write_all(&bytes)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(None),
    }
}

/// Reads from `stream` until its first bytes (`already`, what the caller had read of it, then
/// the stream's) are a whole ClientHello or cannot be one, for at most `within` and
/// [`MAX_HELLO`] bytes. Returns the answer and every byte (to be replayed with [`Replay`]). A stream that ends, fails or stays silent first is
/// [`Hello::NotTls`] (a server-first protocol, such as SSH, waits for the server and says
/// nothing).
pub async fn peek_hello<S>(stream: &mut S, already: Vec<u8>, within: Duration) -> (Hello, Vec<u8>)
where
    S: AsyncRead + Unpin,
{
    let mut buf = already;
    buf.reserve(1024);
    let read = async {
        // Parsed again only once enough bytes arrived to finish a record (`wanted`), so a
        // ClientHello dribbled in byte by byte costs work in proportion to its records.
        let mut next = 0;
        loop {
            if buf.len() >= next {
                match client_hello(&buf) {
                    Hello::Incomplete => next = wanted(&buf),
                    done => return done,
                }
            }
            let mut chunk = [0u8; 2048];
            let room = MAX_HELLO.saturating_sub(buf.len()).min(chunk.len());
            if room == 0 {
                return Hello::NotTls("a ClientHello larger than netproxy reads");
            }
            match stream.read(&mut chunk[..room]).await {
                Ok(0) => return Hello::NotTls("the stream ended before a whole ClientHello"),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(_) => return Hello::NotTls("the stream failed before a whole ClientHello"),
            }
        }
    };
    let hello = tokio::time::timeout(within, read)
        .await
        .unwrap_or(Hello::NotTls("no ClientHello in time"));
    (hello, buf)
}

/// A stream whose first bytes are `prefix`, then the stream's own; writes go to the stream.
#[derive(Debug)]
pub struct Replay<S> {
    prefix: Vec<u8>,
    at: usize,
    stream: S,
}

impl<S> Replay<S> {
    /// `stream`, with `prefix` read first.
    pub fn new(prefix: Vec<u8>, stream: S) -> Self {
        Self {
            prefix,
            at: 0,
            stream,
        }
    }

    /// The stream, and whatever of the prefix was not read yet.
    pub fn into_parts(self) -> (Vec<u8>, S) {
        let mut prefix = self.prefix;
        prefix.drain(..self.at);
        (prefix, self.stream)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.prefix.len() {
            let left = &this.prefix[this.at..];
            let n = left.len().min(buf.remaining());
            buf.put_slice(&left[..n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
