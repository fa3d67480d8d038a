//! `netproxy` is the embeddable proxy: the gate ([`gate::PolicyGate`]: policy, decider, one
//! pinned resolution, audit), the dialer, the assembled [`service::Service`] with reload, the one
//! start path of `serve` and `run` ([`start()`]), and the `check` and `config show` renderings.
//! The `netproxy` binary is a thin clap CLI over it.
//!
//! It is where the pieces are assembled: it reads `proxy-config`, compiles `proxy-policy`, and
//! speaks `proxy-core`'s vocabulary to the transports. It never panics on user input and uses
//! `thiserror`, not `anyhow` (only the binary does).
//!
//! ```
//! use netproxy::check::{CheckRequest, explain};
//! let mut b = proxy_policy::Policy::builder();
//! b.allow("*.example.com", Some("test"))?;
//! let policy = b.build()?;
//! let req = CheckRequest::parse("https://api.example.com/v1", None, None)?;
//! let report = explain(&policy, &req, proxy_policy::OwnAddrs::none());
//! assert_eq!(report.decision.verdict, proxy_core::Verdict::Allow);
//! assert!(report.addresses_checked_at_connect);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

pub mod check;
pub mod child_env;
pub mod control;
pub mod dial;
pub mod gate;
pub mod leases;
pub mod own_addrs;
pub mod resolve;
pub mod service;
pub mod show;
mod start;
pub mod upstream;

pub use start::{
    AdminOptions, AdminToken, DRAIN, ListenError, Listener, Options, Running, Shutdown,
    reload_and_log, start,
};
