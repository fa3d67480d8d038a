//! `netproxy` is the embeddable proxy: the assembled [`Service`] (config, the gate of
//! `proxy-gate`, the dialer, audit) with reload, the one start path of `serve` and `run`
//! ([`start()`]), and the `check` and `config show` renderings. The `netproxy` binary is a thin
//! clap CLI over it.
//!
//! It is where the pieces are assembled: it reads `proxy-config`, compiles `proxy-policy`, and
//! speaks `proxy-core`'s vocabulary to the transports. It never panics on user input and uses
//! `thiserror`, not `anyhow` (only the binary does).
//!
//! ```
//! use netproxy::{CheckRequest, explain};
//! use proxy_gate::{Lookup, PolicyGate, Resolver, Settings, Snapshot};
//! use std::sync::Arc;
//! # #[derive(Debug)]
//! # struct Discard;
//! # impl proxy_core::AuditSink for Discard {
//! #     fn record(&self, _event: &proxy_core::AuditEvent) {}
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut b = proxy_policy::Policy::builder();
//! b.allow("*.example.com", Some("test"))?;
//! let snap = Arc::new(arc_swap::ArcSwap::from_pointee(Snapshot::new(b.build()?, Settings::default())));
//! let own = Arc::new(arc_swap::ArcSwap::from_pointee(proxy_policy::OwnAddrs::default()));
//! let resolver = Resolver::new(Some(&[]), Default::default(), std::time::Duration::from_secs(1))?;
//! let gate = PolicyGate::new(snap, resolver, Arc::new(Discard), own);
//! let req = CheckRequest::parse("https://api.example.com/v1", None, None)?;
//! let report = explain(&gate, &req, Lookup::Skip).await;
//! assert_eq!(report.decision.verdict, proxy_core::Verdict::Allow);
//! assert!(report.addresses_checked_at_connect);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod approvals;
pub mod broker;
mod check;
mod control;
pub mod dns_refuser;
mod interception;
mod roots;
mod service;
mod show;
mod start;
pub mod suggest;

pub use approvals::Approvals;
pub use check::{CheckReport, CheckRequest, TargetError, explain};
pub use control::ServiceControl;
pub use interception::{
    ChildBundle, Interception, MitmStartError, load_trust_bundle, trust_bundle,
};
pub use service::{Files, ReloadError, Service, StartError, managed_of};
pub use show::{config_json, config_text};
pub use start::{
    AdminOptions, AdminToken, DRAIN, Listen, ListenError, Listener, Options, Running, Shutdown,
    reload_and_log, start,
};
