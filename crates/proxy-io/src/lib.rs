//! `proxy-io` moves bytes for netproxy's front-ends: [`tunnel`] and [`tunnel_tcp`] copy both
//! directions of a tunnel with half-close, close it after an idle timeout, and take large copy
//! buffers from a shared pool only while bytes flow, so that an idle tunnel costs little memory.
//!
//! It knows nothing of HTTP, SOCKS or policy; the HTTP and SOCKS front-ends both use it.
#![forbid(unsafe_code)]

mod tunnel;

pub use tunnel::{into_tcp, tunnel, tunnel_tcp};
