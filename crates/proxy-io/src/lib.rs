//! `proxy-io` moves bytes for netproxy's front-ends: [`tunnel`] and [`tunnel_tcp`] copy both
//! directions of a tunnel with half-close, close it after an idle timeout, and take large copy
//! buffers from a shared pool only while bytes flow, so that an idle tunnel costs little memory.
//!
//! It also holds what both front-ends share: the accept loop ([`accept_loop`]: bounded
//! connections, counted tasks for a draining shutdown), their [`Limits`], the live counts the
//! metrics read ([`Stats`]), the bound on the streams they serve ([`Stream`]), the one
//! connection type for TCP and unix sockets ([`Conn`]), and the serving of a tunnel handed to
//! an [`Interceptor`](proxy_core::Interceptor) ([`intercept`]), and the peek at a client's
//! first bytes for a TLS ClientHello ([`peek_hello`], replayed by [`Replay`]). It knows nothing of HTTP, SOCKS or
//! policy; of `proxy-core` it uses only types (the credential, the unix socket the gate
//! checked, failures).
#![forbid(unsafe_code)]

mod accept;
mod conn;
mod intercept;
mod limits;
mod peek;
mod stats;
mod tunnel;

pub use accept::{Tracker, accept_loop};
#[cfg(target_os = "linux")]
pub use conn::connect_unix;
pub use conn::{Conn, Stream};
pub use intercept::intercept;
pub use limits::Limits;
pub use peek::{HELLO_WAIT, Replay, peek_hello, verify_hello};
pub use stats::{Open, Stats};
pub use tunnel::{into_tcp, tunnel, tunnel_tcp, tunnel_tcp_until, tunnel_until};
