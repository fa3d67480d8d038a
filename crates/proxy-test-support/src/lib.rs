//! `proxy-test-support` holds netproxy's test doubles, for dev-dependencies only: an in-process
//! DNS server ([`DnsServer`]) over real UDP and TCP sockets, recording origin servers
//! ([`HttpOrigin`], [`TlsOrigin`] with a [`TestCa`], [`EchoServer`], [`WsEchoServer`]), the
//! front-ends' doubles of the request path: a [`StubGate`], a [`RecordingDialer`] that fails the
//! test on any non-loopback dial, and a [`GreetingInterceptor`] that answers inside intercepted
//! tunnels. For tests of a real binary: [`Process`] (spawn it and wait for its ready file, read
//! its stderr as it comes), [`Curl`] (curl through a proxy with the common flags) and
//! [`wait_for`] (poll an observable condition, never a fixed sleep). Everything listens on and
//! dials loopback only.
#![forbid(unsafe_code)]

mod curl;
mod dialer;
mod dns;
mod gate;
mod intercept;
mod origin;
mod spawn;
mod tls;
mod wait;

pub use curl::{Curl, CurlOutput};
pub use dialer::RecordingDialer;
pub use dns::{Answer, DnsServer};
pub use gate::StubGate;
pub use intercept::GreetingInterceptor;
pub use origin::{EchoServer, HttpOrigin, Seen, WsEchoServer};
pub use spawn::{Process, output_within};
pub use tls::{TestCa, TlsOrigin, tls_client, tls_client_pem};
pub use wait::{PATIENCE, wait_for};
