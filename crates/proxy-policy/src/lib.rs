//! `proxy-policy` is netproxy's decision engine: it decides whether a request may leave, and
//! explains why. It is pure: no I/O, no async, no global state, no runtime. A [`Policy`] is
//! compiled once from rules by a [`PolicyBuilder`] and is `Send + Sync`, so any program can
//! embed it: the netproxy server, a sandbox launcher, a CI gate.
//!
//! The key design decision is the two phases. Host names cannot be judged by their spelling
//! alone, since a permitted name may resolve to a loopback or private address. But resolving
//! every name before judging it leaks lookups for names the policy refuses. So
//! [`Policy::evaluate`] gives a final verdict for everything it can (deny list, local literals,
//! allowlist, limited mode) and, for an allowed name, answers "allowed if its addresses pass";
//! the caller resolves that name once and finishes with [`Policy::check_addresses`]. The caller
//! then connects only to the addresses it checked.
//!
//! Decision order: deny list → local/private literal → allowlist → (the caller's decider, for a
//! miss) → address check. Deny always wins, on a name's resolved addresses too; an empty
//! allowlist denies everything; while local protection is on, a pattern with a wildcard never
//! admits a local target; limited mode is checked last. With `allow_local_binding`, local
//! protection is off as a whole.
//!
//! The machine's own addresses are local too, but only the caller knows them: it passes an
//! [`OwnAddrs`] set beside the policy ([`Policy::evaluate_with`], [`Policy::check_addresses`]),
//! which never reads the system itself.
//!
//! ```
//! use proxy_core::{Protocol, Reason, RequestMeta, Target};
//! use proxy_policy::{Evaluation, Policy};
//!
//! let mut builder = Policy::builder();
//! builder.allow("**.github.com", Some("team"))?.allow("localhost:3000-3999", None)?;
//! let policy = builder.build()?;
//!
//! let meta = RequestMeta::new(Protocol::Http, Target::parse_authority("localhost:3001", 80).unwrap())
//!     .with_method("GET");
//! assert!(matches!(policy.evaluate(&meta), Evaluation::Allow { .. }));
//!
//! let meta = RequestMeta::new(Protocol::Http, Target::parse_authority("localhost:8080", 80).unwrap());
//! assert_eq!(policy.evaluate(&meta).decision().reason, Some(Reason::NotAllowedLocal));
//! # Ok::<(), proxy_policy::Error>(())
//! ```
#![forbid(unsafe_code)]

mod classify;
mod error;
mod hooks;
mod matcher;
mod own;
mod pattern;
mod policy;

pub use classify::{LocalRange, classify};
pub use error::{Error, PatternError};
pub use hooks::{Hook, HookError, HookVerdict};
pub use own::OwnAddrs;
pub use pattern::{Pattern, PatternKind, PortRange};
pub use policy::{Evaluation, Intercept, Policy, PolicyBuilder};
pub use proxy_core;

#[cfg(test)]
mod tests;
