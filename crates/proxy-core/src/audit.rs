//! Audit events (docs/audit.md) and the sink they are written to.

use std::net::SocketAddr;
use std::time::SystemTime;

use crate::decision::{Decision, Rule, Source, Verdict};
use crate::target::{Mode, Protocol, RequestMeta};

/// The tracing target of audit events.
pub const AUDIT_TARGET: &str = "netproxy::audit";
/// The `event.name` of a policy decision.
pub const EVENT_NAME: &str = "netproxy.policy_decision";

/// What a decision was about: a destination host (`domain`), or something else such as the mode
/// guard, the proxy's state or a unix socket (`non_domain`).
///
/// ```
/// use proxy_core::Scope;
/// assert_eq!(Scope::NonDomain.as_str(), "non_domain");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Host policy.
    Domain,
    /// Mode guard, proxy state, unix socket, interception guard.
    NonDomain,
}

impl Scope {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Domain => "domain",
            Scope::NonDomain => "non_domain",
        }
    }
}

/// One policy decision, as recorded. It never holds a full URL, a query string or a credential:
/// only the canonical host, the port, the method and the client's address.
///
/// ```
/// use proxy_core::{AuditEvent, Decision, Mode, Protocol, Reason, RequestMeta, Target};
/// let meta = RequestMeta::new(Protocol::HttpsConnect, Target::parse_authority("evil.example:443", 443).unwrap())
///     .with_method("CONNECT");
/// let ev = AuditEvent::new(&meta, &Decision::deny(Reason::Denied), Mode::Full);
/// let fields = ev.fields();
/// assert!(fields.contains(&("network.policy.reason", "denied".to_string())));
/// assert!(fields.contains(&("server.address", "evil.example".to_string())));
/// assert!(fields.contains(&("client.address", "unknown".to_string())));
/// ```
#[derive(Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// When the decision was made.
    pub timestamp: SystemTime,
    /// Domain or non-domain.
    pub scope: Scope,
    /// Allow, deny or ask.
    pub decision: Verdict,
    /// Who decided.
    pub source: Source,
    /// The reason's wire name (`allow` for a baseline allow).
    pub reason: &'static str,
    /// True when a decider overrode an allowlist miss.
    pub policy_override: bool,
    /// The transport.
    pub protocol: Protocol,
    /// The canonical host, or `unix-socket`.
    pub server_address: String,
    /// The port (0 for a unix socket).
    pub server_port: u16,
    /// The HTTP method, if any.
    pub method: Option<String>,
    /// The client's `ip:port`, if known.
    pub client: Option<SocketAddr>,
    /// The mode in force.
    pub mode: Mode,
    /// The rule that decided, if any.
    pub rule: Option<Rule>,
    /// True when a connection admitted earlier was closed because a narrower policy no longer
    /// allows it; the decision is then the new policy's refusal.
    pub revoked: bool,
    /// The brokered credential the request carried (`credential.grant`), and whether its real
    /// value was injected (`credential.injected`: the request was allowed and the grant is bound
    /// to its destination). Never a value.
    pub credential: Option<CredentialField>,
}

/// The audit fields of a request that carried a brokered credential's dummy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialField {
    /// `credential.grant`: the grant's name.
    pub grant: String,
    /// `credential.injected`.
    pub injected: bool,
}

impl Clone for AuditEvent {
    fn clone(&self) -> Self {
        Self {
            timestamp: self.timestamp,
            scope: self.scope,
            decision: self.decision,
            source: self.source,
            reason: self.reason,
            policy_override: self.policy_override,
            protocol: self.protocol,
            server_address: self.server_address.clone(),
            server_port: self.server_port,
            method: self.method.clone(),
            client: self.client,
            mode: self.mode,
            rule: self.rule.clone(),
            revoked: self.revoked,
            credential: self.credential.clone(),
        }
    }

    /// Field by field, so that the strings keep their allocations (sinks recycle events).
    fn clone_from(&mut self, source: &Self) {
        self.timestamp = source.timestamp;
        self.scope = source.scope;
        self.decision = source.decision;
        self.source = source.source;
        self.reason = source.reason;
        self.policy_override = source.policy_override;
        self.protocol = source.protocol;
        self.server_address.clone_from(&source.server_address);
        self.server_port = source.server_port;
        self.method.clone_from(&source.method);
        self.client = source.client;
        self.mode = source.mode;
        self.rule.clone_from(&source.rule);
        self.revoked = source.revoked;
        self.credential.clone_from(&source.credential);
    }
}

impl AuditEvent {
    /// The event for `decision` about `meta`, stamped now.
    pub fn new(meta: &RequestMeta, decision: &Decision, mode: Mode) -> Self {
        let scope = match decision.source {
            Source::ModeGuard | Source::ProxyState => Scope::NonDomain,
            _ if matches!(meta.target, crate::Target::Unix(_)) => Scope::NonDomain,
            _ => Scope::Domain,
        };
        Self {
            timestamp: SystemTime::now(),
            scope,
            decision: decision.verdict,
            source: decision.source,
            reason: decision.reason_str(),
            policy_override: decision.policy_override,
            protocol: meta.protocol,
            server_address: meta.target.server_address(),
            server_port: meta.target.port(),
            method: meta.method.clone(),
            client: meta.client,
            mode,
            rule: decision.rule.clone(),
            revoked: false,
            credential: meta.credential.as_ref().map(|c| CredentialField {
                grant: c.grant.clone(),
                injected: c.refused.is_none() && decision.is_allowed(),
            }),
        }
    }

    /// The event for a connection admitted as `meta` and closed because the new policy's
    /// `decision` refuses it.
    pub fn revocation(meta: &RequestMeta, decision: &Decision, mode: Mode) -> Self {
        let mut ev = Self::new(meta, decision, mode);
        ev.revoked = true;
        ev
    }

    /// The fields of docs/audit.md with their values, in a stable order (the timestamp is
    /// left to the sink, which formats it); `network.policy.revoked` only on a revocation;
    /// `credential.grant` and `credential.injected` only for a request carrying a dummy.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("network.policy.scope", self.scope.as_str().to_owned()),
            ("network.policy.decision", self.decision.as_str().to_owned()),
            ("network.policy.source", self.source.as_str().to_owned()),
            ("network.policy.reason", self.reason.to_owned()),
            ("network.policy.override", self.policy_override.to_string()),
            (
                "network.transport.protocol",
                self.protocol.as_str().to_owned(),
            ),
            ("server.address", self.server_address.clone()),
            ("server.port", self.server_port.to_string()),
            (
                "http.request.method",
                self.method.clone().unwrap_or_else(|| "none".to_owned()),
            ),
            (
                "client.address",
                self.client
                    .map_or_else(|| "unknown".to_owned(), |c| c.to_string()),
            ),
        ];
        if self.revoked {
            fields.push(("network.policy.revoked", "true".to_owned()));
        }
        if let Some(c) = &self.credential {
            fields.push(("credential.grant", c.grant.clone()));
            fields.push(("credential.injected", c.injected.to_string()));
        }
        fields
    }
}

/// Where audit events go. `record` is called once per decision on the request path, so it
/// must return quickly and never block: a sink that exports queues the event and drops (and
/// counts) when its queue is full.
///
/// ```
/// use std::sync::Mutex;
/// use proxy_core::{AuditEvent, AuditSink};
/// #[derive(Debug, Default)]
/// struct Memory(Mutex<Vec<AuditEvent>>);
/// impl AuditSink for Memory {
///     fn record(&self, event: &AuditEvent) {
///         self.0.lock().unwrap().push(event.clone());
///     }
/// }
/// ```
pub trait AuditSink: Send + Sync {
    /// Records one decision.
    fn record(&self, event: &AuditEvent);

    /// Records one decision shared with other sinks: a sink that keeps the event (a queue)
    /// can keep this `Arc` instead of a copy. By default, [`AuditSink::record`].
    fn record_shared(&self, event: &std::sync::Arc<AuditEvent>) {
        self.record(event);
    }

    /// Whether this sink keeps events (and so prefers [`AuditSink::record_shared`]); a sink
    /// that only looks at them says no, and is given a borrow.
    fn keeps_events(&self) -> bool {
        false
    }
}

/// One refused request as kept in the blocked-request buffer and shown by `GET /blocked`.
///
/// ```
/// use proxy_core::{AuditEvent, BlockedRecord, Decision, Mode, Protocol, Reason, RequestMeta, Target};
/// let meta = RequestMeta::new(Protocol::Socks5Tcp, Target::parse_authority("10.0.0.5:22", 22).unwrap());
/// let ev = AuditEvent::new(&meta, &Decision::deny(Reason::NotAllowedLocal), Mode::Full);
/// let rec = BlockedRecord::from_event(&ev);
/// assert_eq!((rec.host.as_str(), rec.port, rec.reason), ("10.0.0.5", 22, "not_allowed_local"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedRecord {
    /// The canonical host, or `unix-socket`.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The reason's wire name.
    pub reason: &'static str,
    /// The transport.
    pub protocol: Protocol,
    /// The method, if any.
    pub method: Option<String>,
    /// The client's address, if known.
    pub client: Option<SocketAddr>,
    /// The mode in force.
    pub mode: Mode,
    /// Deny or ask.
    pub decision: Verdict,
    /// Who decided.
    pub source: Source,
    /// When, in seconds since the Unix epoch.
    pub timestamp: u64,
}

impl BlockedRecord {
    /// The record of a refusal, from its audit event.
    pub fn from_event(ev: &AuditEvent) -> Self {
        Self {
            host: ev.server_address.clone(),
            port: ev.server_port,
            reason: ev.reason,
            protocol: ev.protocol,
            method: ev.method.clone(),
            client: ev.client,
            mode: ev.mode,
            decision: ev.decision,
            source: ev.source,
            timestamp: ev
                .timestamp
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}
