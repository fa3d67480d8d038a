//! The streams the front-ends move bytes between: [`Stream`], the bound every dialled
//! connection and client stream meets, and [`Conn`], one connection type for TCP and unix
//! sockets.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
#[cfg(unix)]
use tokio::net::UnixStream;

/// A byte stream a front-end can serve, tunnel or hand to another task: what a
/// [`Dialer`](proxy_core::Dialer)'s connection and an intercepted client stream must be.
/// Every type with those bounds is one.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// A dialled connection: TCP (to a checked address, or through an upstream proxy) or a unix
/// socket (through the descriptor the gate checked).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let tcp = tokio::net::TcpStream::connect(listener.local_addr()?).await?;
/// let conn = proxy_io::Conn::from(tcp);
/// assert!(proxy_io::into_tcp(conn).is_ok());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub enum Conn {
    /// A TCP connection.
    Tcp(TcpStream),
    /// A unix socket connection.
    #[cfg(unix)]
    Unix(UnixStream),
}

impl From<TcpStream> for Conn {
    fn from(s: TcpStream) -> Self {
        Conn::Tcp(s)
    }
}

#[cfg(unix)]
impl From<UnixStream> for Conn {
    fn from(s: UnixStream) -> Self {
        Conn::Unix(s)
    }
}

/// Connects to the unix socket the gate checked, through its descriptor
/// ([`proxy_core::UnixSocket::connect_path`]), never its path. A failure names the path
/// asked for; its kind is [`proxy_core::UpstreamFailure::ConnectRefused`] when nothing
/// listens there.
#[cfg(target_os = "linux")]
pub async fn connect_unix(socket: &proxy_core::UnixSocket) -> Result<Conn, proxy_core::Failure> {
    match UnixStream::connect(socket.connect_path()).await {
        Ok(s) => Ok(Conn::Unix(s)),
        Err(e) => Err(proxy_core::Failure::new(
            proxy_core::UpstreamFailure::of_connect_error(&e),
            format!(
                "could not connect to {} ({})",
                socket.path().display(),
                proxy_core::io_error_text(&e)
            ),
        )),
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(unix)]
            Conn::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(unix)]
            Conn::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            #[cfg(unix)]
            Conn::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Tcp(s) => s.is_write_vectored(),
            #[cfg(unix)]
            Conn::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_flush(cx),
            #[cfg(unix)]
            Conn::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(unix)]
            Conn::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
