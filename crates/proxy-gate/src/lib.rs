//! `proxy-gate` is netproxy's request path: the [`PolicyGate`] (proxy-core's `Gate`: the
//! compiled policy, the embedder's [`Decider`], one pinned lookup with every address checked,
//! one audit event per request, leases that a narrower policy revokes), the [`Resolver`], the
//! [`TcpDialer`] (TCP, and tunnels through an upstream proxy), the [`remedy`] of a refusal, the choice of an upstream proxy
//! ([`UpstreamProxies`]), the machine's own addresses ([`OwnAddrsWatch`]) and the dry run
//! ([`PolicyGate::explain`]) that `netproxy check` and the admin API's `POST /check` use, so a
//! check and a request are judged by the same code.
//!
//! It takes typed [`Settings`] and a compiled [`proxy_policy::Policy`], never netproxy's
//! configuration; the front-ends never name it (they see proxy-core's `Gate` and `Dialer`).
//!
//! ```
//! use std::sync::Arc;
//! use proxy_core::{Protocol, RequestMeta, Target, Verdict};
//! use proxy_gate::{Lookup, PolicyGate, Resolver, Settings, Snapshot};
//! #[derive(Debug)]
//! struct Discard;
//! impl proxy_core::AuditSink for Discard {
//!     fn record(&self, _event: &proxy_core::AuditEvent) {}
//! }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut b = proxy_policy::Policy::builder();
//! b.allow("*.example.com", Some("test"))?;
//! let snap = Snapshot::new(b.build()?, Settings::default());
//! let state = Arc::new(arc_swap::ArcSwap::from_pointee(snap));
//! let resolver = Resolver::new(Some(&[]), Default::default(), std::time::Duration::from_secs(1))?;
//! let own = Arc::new(arc_swap::ArcSwap::from_pointee(proxy_policy::OwnAddrs::default()));
//! let gate = PolicyGate::new(state, resolver, Arc::new(Discard), own);
//! let meta = RequestMeta::new(Protocol::HttpsConnect, Target::parse_authority("api.example.com:443", 443)?);
//! let seen = gate.explain(&meta, Lookup::Skip).await;
//! assert_eq!(seen.decision.verdict, Verdict::Allow);
//! assert!(seen.pending);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod dial;
mod gate;
mod leases;
mod own_addrs;
mod remedy;
mod resolve;
mod unix;
mod upstream;

pub use dial::TcpDialer;
pub use gate::{
    Decider, DeciderFuture, Explanation, Lookup, LookupObserver, PolicyGate, Settings,
    SharedSnapshot, Snapshot,
};
pub use own_addrs::{OwnAddrsWatch, SharedOwnAddrs, dump as dump_own_addrs};
pub use remedy::{Managed, Remedy, remedy};
pub use resolve::{ResolveError, Resolver};
pub use upstream::{Endpoint, UpstreamProxies};
