//! `proxy-io` moves bytes for netproxy's front-ends: [`tunnel`] and [`tunnel_tcp`] copy both
//! directions of a tunnel with half-close, close it after an idle timeout, and take large copy
//! buffers from a shared pool only while bytes flow, so that an idle tunnel costs little memory.
//!
//! It also holds the accept loop both front-ends share ([`accept_loop`]: bounded connections,
//! counted tasks for a draining shutdown), and the live counts the metrics read ([`Stats`]).
//! It knows nothing of HTTP, SOCKS or policy.
#![forbid(unsafe_code)]

mod accept;
mod stats;
mod tunnel;

pub use accept::{Tracker, accept_loop};
pub use stats::{Open, Stats};
pub use tunnel::{into_tcp, tunnel, tunnel_tcp, tunnel_tcp_until, tunnel_until};
