//! The least HTTP/1.1 the TLS benchmark and the soak need, on both sides: a buffered reader that finds a
//! message head, its `Content-Length` or chunked body and its `Connection: close`, and skips
//! bodies. Hand-written so the load client and the origin cost little next to the proxy (the
//! shared kit's loadgen does the same for plain HTTP).

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The largest message head accepted (a larger one is an error, not a hang).
const MAX_HEAD: usize = 64 * 1024;

/// What a message head says about the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    /// The status of a response (0 for a request).
    pub(crate) status: u16,
    /// `Content-Length`, when given.
    pub(crate) length: Option<usize>,
    /// `Transfer-Encoding: chunked`.
    pub(crate) chunked: bool,
    /// `Connection: close`.
    pub(crate) close: bool,
}

/// A stream with a read buffer.
#[derive(Debug)]
pub(crate) struct Reader<S> {
    io: S,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

fn bad(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

impl<S: AsyncRead + Unpin> Reader<S> {
    pub(crate) fn new(io: S) -> Self {
        Self {
            io,
            buf: vec![0; 4096],
            start: 0,
            end: 0,
        }
    }

    /// The stream, mutably (for writes).
    pub(crate) fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// The stream back; an error if bytes were read past what was consumed.
    pub(crate) fn into_inner(self) -> io::Result<S> {
        if self.start != self.end {
            return Err(bad("unexpected bytes after the CONNECT reply"));
        }
        Ok(self.io)
    }

    /// Reads more; `Ok(0)` at the end of the stream.
    async fn fill(&mut self) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            if self.buf.len() >= MAX_HEAD {
                return Err(bad("message head too large"));
            }
            self.buf.resize(self.buf.len() * 2, 0);
        }
        let n = self.io.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n)
    }

    /// Reads one message head. `Ok(None)`: the stream ended cleanly before any byte of it.
    pub(crate) async fn head(&mut self) -> io::Result<Option<Head>> {
        loop {
            let window = &self.buf[self.start..self.end];
            if let Some(at) = window.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = parse_head(&window[..at])?;
                self.start += at + 4;
                return Ok(Some(head));
            }
            if self.fill().await? == 0 {
                if self.start == self.end {
                    return Ok(None);
                }
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Consumes `n` body bytes, appending them to `keep` when given.
    async fn take(&mut self, mut n: usize, mut keep: Option<&mut Vec<u8>>) -> io::Result<()> {
        loop {
            let have = (self.end - self.start).min(n);
            if let Some(k) = keep.as_deref_mut() {
                k.extend_from_slice(&self.buf[self.start..self.start + have]);
            }
            self.start += have;
            n -= have;
            if n == 0 {
                return Ok(());
            }
            if self.fill().await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// One line without its CRLF, as text.
    async fn line(&mut self) -> io::Result<String> {
        loop {
            let window = &self.buf[self.start..self.end];
            if let Some(at) = window.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&window[..at]).into_owned();
                self.start += at + 2;
                return Ok(line);
            }
            if self.fill().await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Consumes the body `head` announces; returns its length.
    pub(crate) async fn body(&mut self, head: &Head) -> io::Result<usize> {
        self.body_into(head, None).await
    }

    /// Reads the body `head` announces into a vector (the soak reads refusals' JSON bodies).
    pub(crate) async fn body_bytes(&mut self, head: &Head) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.body_into(head, Some(&mut out)).await?;
        Ok(out)
    }

    /// Consumes the body `head` announces, keeping its bytes in `keep` when given; returns its
    /// length.
    async fn body_into(
        &mut self,
        head: &Head,
        mut keep: Option<&mut Vec<u8>>,
    ) -> io::Result<usize> {
        if head.chunked {
            let mut total = 0;
            loop {
                let line = self.line().await?;
                let size = line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size, 16)
                    .map_err(|_| bad(format!("bad chunk size {size:?}")))?;
                if size == 0 {
                    // Trailers, up to the empty line.
                    while !self.line().await?.is_empty() {}
                    return Ok(total);
                }
                self.take(size, keep.as_deref_mut()).await?;
                if !self.line().await?.is_empty() {
                    return Err(bad("chunk not followed by CRLF"));
                }
                total += size;
            }
        }
        let n = head.length.unwrap_or(0);
        self.take(n, keep).await?;
        Ok(n)
    }

    /// Reads until the end of the stream (the peer closed; an unclean TLS end counts too), or
    /// an error if more bytes come.
    pub(crate) async fn until_end(&mut self) -> io::Result<()> {
        if self.start != self.end {
            return Err(bad("unexpected bytes after the response"));
        }
        match self.fill().await {
            Ok(0) => Ok(()),
            Ok(_) => Err(bad("unexpected bytes after the response")),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn parse_head(head: &[u8]) -> io::Result<Head> {
    let text = std::str::from_utf8(head).map_err(|_| bad("message head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or("");
    let status = if first.starts_with("HTTP/1.") {
        first
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("bad status line {first:?}")))?
    } else {
        0
    };
    let mut out = Head {
        status,
        length: None,
        chunked: false,
        close: false,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad(format!("bad header line {line:?}")));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            out.length = Some(
                value
                    .parse()
                    .map_err(|_| bad(format!("bad Content-Length {value:?}")))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            out.chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            out.close = value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::{Head, Reader, parse_head};

    #[test]
    fn heads_are_parsed() {
        let h =
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: keep-alive, Close")
                .unwrap();
        assert_eq!(
            h,
            Head {
                status: 200,
                length: Some(12),
                chunked: false,
                close: true
            }
        );
        let h = parse_head(b"GET /1k HTTP/1.1\r\nHost: a\r\ntransfer-encoding: chunked").unwrap();
        assert_eq!((h.status, h.chunked, h.close), (0, true, false));
        assert!(parse_head(b"HTTP/1.1 x OK").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nno colon").is_err());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn bodies_by_length_and_chunked_are_consumed() {
        let wire: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc\
HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n3;x=1\r\ncde\r\n0\r\nT: 1\r\n\r\n";
        let mut r = Reader::new(wire);
        let h = r.head().await.unwrap().unwrap();
        assert_eq!(r.body(&h).await.unwrap(), 3);
        let h = r.head().await.unwrap().unwrap();
        assert_eq!(r.body(&h).await.unwrap(), 5);
        assert!(r.head().await.unwrap().is_none(), "clean end");
        r.until_end().await.unwrap();
        let mut r = Reader::new(wire);
        let h = r.head().await.unwrap().unwrap();
        assert_eq!(r.body_bytes(&h).await.unwrap(), b"abc");
        let h = r.head().await.unwrap().unwrap();
        assert_eq!(r.body_bytes(&h).await.unwrap(), b"abcde");
        assert!(r.head().await.unwrap().is_none(), "clean end");
        r.until_end().await.unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_truncated_body_is_an_error() {
        let mut r = Reader::new(&b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc"[..]);
        let h = r.head().await.unwrap().unwrap();
        assert!(r.body(&h).await.is_err());
    }
}
