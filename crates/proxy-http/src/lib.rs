//! `proxy-http` is netproxy's HTTP/1.1 proxy front-end: absolute-form requests of any method
//! (bodies streamed both ways, never buffered whole), `CONNECT` tunnels, and websocket upgrades.
//!
//! It decides nothing itself and never resolves a name: each request becomes a
//! [`proxy_core::RequestMeta`] for the [`Gate`](proxy_core::Gate), and an admitted route (TCP,
//! or the unix socket of an `x-unix-socket` request) is connected by the
//! [`Dialer`](proxy_core::Dialer), which dials only what the gate checked. A `CONNECT` the gate
//! routes with `intercept` is handed, once dialled and answered `200`, to the
//! [`Interceptor`](proxy_core::Interceptor) with its client stream ([`TunnelClient`]). It never
//! names the policy or the config crates. Its entry point is [`run`]: the caller binds the
//! listener (tests bind port 0) and decides what shutdown means.
//!
//! Responses follow docs/responses.md: a refusal is a `403` JSON body with `x-proxy-error`
//! (`503` for a disabled proxy), a malformed request a `400`, an upstream failure a `502` JSON
//! body, and an upstream that sends no response head within the idle timeout of the request's
//! last byte (`progress.rs`: a long upload is no timeout) a `504`.
#![forbid(unsafe_code)]
// Handlers return `Err(response)` to answer early; a response is large but built once per
// request, so boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

mod count;
mod cut;
mod forward;
mod idle;
mod progress;
mod reset;
mod respond;
mod server;
mod shared;
mod unix;

pub use proxy_io::{Limits, tunnel, tunnel_tcp};
pub use reset::ClientStream;
pub use respond::{Body, blocked, error, failure, full, json_response};
pub use server::{proxy_authorized, run, run_brokered, serve_stream};
pub use shared::{Broker, TunnelClient};
pub use unix::{MAX_UNIX_SOCKET_PATH, UNIX_SOCKET_HEADER, UnixHeaderError, unix_socket_path};
