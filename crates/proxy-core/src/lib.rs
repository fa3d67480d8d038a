//! `proxy-core` is the vocabulary every netproxy crate speaks: the canonical [`Host`], the
//! [`Target`] of a request and the [`RequestMeta`] a front-end parses, the [`Decision`] and the
//! [`Reason`] that explains it, the [`AuditEvent`] recorded for each decision, and the traits the
//! transports meet through ([`Gate`], [`Dialer`], [`Interceptor`], [`AuditSink`], [`Control`]).
//!
//! It is not an implementation: it performs no I/O, spawns nothing and depends on no async
//! runtime. Its traits use `async fn` with `Send` futures and an associated connection type, so
//! a front-end adds the `tokio::io` bounds it needs where it uses a connection, and the pure
//! policy engine (`proxy-policy`) can speak this vocabulary without pulling in a runtime.
//!
//! Host canonicalisation lives here because every front-end must turn wire input into a
//! [`Host`] before asking the gate, and front-ends never depend on the policy crate.
//!
//! ```
//! use proxy_core::{Host, Protocol, RequestMeta, Target};
//! let target = Target::parse_authority("API.Example.com.:443", 443)?;
//! let meta = RequestMeta::new(Protocol::HttpsConnect, target).with_method("CONNECT");
//! assert_eq!(meta.target.host(), Some(&Host::parse("api.example.com")?));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod audit;
mod control;
mod credential;
mod decision;
mod gate;
pub mod host;
mod intercept;
mod lease;
mod remedy;
mod target;
pub mod tls;

pub use audit::{
    AUDIT_TARGET, AuditEvent, AuditSink, BlockedRecord, CredentialField, EVENT_NAME, Scope,
    dns_name_text,
};
pub use control::{
    Answered, Approval, BlockedView, CheckQuery, Control, ControlError, DomainChange, PatternLists,
    PendingDecision, PendingView, UnknownApproval,
};
pub use credential::{ProxyCredential, constant_time_eq, redact_userinfo};
pub use decision::{Decision, Reason, Rule, Source, UnknownReason, Verdict};
pub use gate::{
    Admission, Dialer, Failure, Gate, InnerVerdict, RequestHead, Route, UnixSocket,
    UpstreamFailure, Via, io_error_text, judge_hello, judge_inner,
};
pub use host::{Host, HostError};
pub use intercept::{Intercepted, Interceptor, NoInterception};
pub use lease::{HeldLease, Lease, LeaseHolder, Revoked, Revoker};
pub use remedy::Remedy;
pub use target::{
    AuthorityError, BrokeredCredential, METHOD_OVERRIDE_HEADERS, Mode, Protocol, RequestMeta,
    Target, UnknownMode, UnknownProtocol, method_override, split_authority,
};
